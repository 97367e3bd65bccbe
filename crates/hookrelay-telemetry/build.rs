//! The commit a binary is built from, as `HOOKRELAY_COMMIT`: the variable
//! itself when the build sets it (an image build, a source archive), else
//! `git rev-parse` (rebuilt when HEAD moves), else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=HOOKRELAY_COMMIT");
    let given = std::env::var("HOOKRELAY_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty());
    let commit = given.or_else(|| {
        let git_dir = git(&["rev-parse", "--absolute-git-dir"])?;
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/packed-refs");
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{reference}");
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    println!(
        "cargo:rustc-env=HOOKRELAY_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}
