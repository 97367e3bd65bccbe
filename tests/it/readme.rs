//! The README's curl walkthrough, run as written (its first block, steps 1–6)
//! against a live server, from the repository's root as a reader pastes it:
//! every step answers as the README says, and the answers, which hold
//! secrets, land 0600 in a private scratch directory, not in the clone.

use std::os::unix::fs::PermissionsExt;

use crate::helpers::spawn_app;

/// The first ```sh block after `heading`.
fn first_block_after(readme: &str, heading: &str) -> String {
    let section = &readme[readme.find(heading).expect("the heading")..];
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + section[start..].find("\n```").expect("the block ends");
    section[start..end].to_owned()
}

#[tokio::test]
async fn the_curl_walkthrough_runs_as_written_and_keeps_its_secrets_private() {
    let app = spawn_app().await;
    let root = hookrelay_testkit::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let block = first_block_after(&readme, "## Walkthrough with curl");
    assert!(block.contains("H=http://127.0.0.1:8080"), "{block}");
    let script = format!(
        "set -euo pipefail\n{}\necho\necho \"SCRATCH=$PWD\"\n",
        block.replace("H=http://127.0.0.1:8080", &format!("H={}", app.address))
    );
    let output = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(root)
        .output()
        .await
        .expect("bash runs");
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the walkthrough failed (needs curl, jq, openssl):\n{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(said.matches("HTTP/1.1 202 Accepted").count(), 2, "{said}");
    assert!(said.contains("HTTP/1.1 401 Unauthorized"), "{said}");
    let scratch = said
        .lines()
        .find_map(|l| l.strip_prefix("SCRATCH="))
        .expect("the scratch directory");
    let scratch = std::path::Path::new(scratch);
    assert_ne!(scratch, root, "the walkthrough moves out of the clone");
    for answer in ["tenant.json", "repo.json", "gitlab.json"] {
        let path = scratch.join(answer);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{answer} holds secrets");
        assert!(
            !root.join(answer).exists(),
            "{answer} is not written into the clone"
        );
    }
    let mode = std::fs::metadata(scratch).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the scratch directory is private");
    std::fs::remove_dir_all(scratch).unwrap();
}
