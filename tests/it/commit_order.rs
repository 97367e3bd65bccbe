//! Commit order without a global lock (`src/store/event.rs`): writers of
//! different repositories commit in parallel, and no reader on any replica
//! ever skips an event or delivers a repository's events out of id order,
//! including an event that commits late, below ids already committed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use hookrelay::grpc::proto::Event;

use crate::helpers::{TestApp, TestRepository, next_event, spawn_app_on, spawn_app_with};

const WAIT: Duration = Duration::from_secs(15);

/// Two servers on one database, as replicas behind one public URL.
async fn two_replicas() -> (TestApp, TestApp) {
    let public_url = || Some(url::Url::parse("https://relay.example.com").unwrap());
    let a = spawn_app_with(|c| c.public_url = public_url()).await;
    let b = spawn_app_on(&a.database_url, |c| c.public_url = public_url())
        .await
        .unwrap();
    (a, b)
}

/// One event appended through `append_events` on `connection`, inside
/// whatever transaction it holds: its id.
async fn append_raw(
    connection: &mut sqlx::PgConnection,
    repository: &TestRepository,
    delivery: &str,
) -> i64 {
    sqlx::query_scalar(
        "select appended_event_id from append_events( \
             array[(select tenant_id from repository where repository_id = $1::uuid)], array[$1::uuid], \
             array['github'], array['push'], array[$2], array[now()], array['[]'::jsonb], \
             array[convert_to('{}', 'UTF8')], array[null::text], array[null::text], array[null::text])",
    )
    .bind(&repository.id)
    .bind(delivery)
    .fetch_one(connection)
    .await
    .unwrap()
}

/// Reads `count` events and checks each repository's come in increasing id
/// order; returns them per repository.
async fn receive(
    stream: &mut tonic::Streaming<Event>,
    count: usize,
    name: &str,
) -> BTreeMap<String, Vec<i64>> {
    let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for _ in 0..count {
        let event = next_event(stream, WAIT).await;
        seen.entry(event.repository_id).or_default().push(event.id);
    }
    for (repository, ids) in &seen {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{name}, {repository}: out of order or repeated: {ids:?}"
        );
    }
    seen
}

/// 12 repositories, writers on two replicas (webhooks, 48 at a time) and raw
/// writers whose transactions linger a random few milliseconds before
/// committing, so that ids commit out of order across repositories all the
/// time. A stream on each replica gets every committed event once, each
/// repository in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_writers_on_two_replicas_many_repositories_no_reader_skips_or_reorders() {
    let (a, b) = two_replicas().await;
    let tenant = a.tenant("acme").await;
    let mut repositories = Vec::new();
    for n in 0..12 {
        repositories.push(a.repository(&tenant, &format!("acme/r{n}")).await);
    }
    let mut on_a = a.stream(&tenant.token, "on-a", &[], None).await.unwrap();
    let mut on_b = b.stream(&tenant.token, "on-b", &[], None).await.unwrap();

    let (a, b) = (Arc::new(a), Arc::new(b));
    let semaphore = Arc::new(tokio::sync::Semaphore::new(48));
    let mut writers = tokio::task::JoinSet::new();
    const WEBHOOKS: usize = 360;
    const RAW: usize = 120;
    for i in 0..WEBHOOKS {
        let (app, repository, permit) = (
            if i % 2 == 0 { a.clone() } else { b.clone() },
            repositories[i % repositories.len()].clone(),
            semaphore.clone(),
        );
        writers.spawn(async move {
            let _permit = permit.acquire().await.unwrap();
            (
                repository.id.clone(),
                app.push(&repository, &format!("w-{i}")).await,
            )
        });
    }
    for i in 0..RAW {
        let (pool, repository) = (
            a.pool.clone(),
            repositories[(i * 5) % repositories.len()].clone(),
        );
        writers.spawn(async move {
            let mut transaction = pool.begin().await.unwrap();
            let id = append_raw(&mut transaction, &repository, &format!("raw-{i}")).await;
            // Commits late: others draw higher ids and commit meanwhile.
            let linger = Duration::from_millis(rand::random::<u64>() % 20);
            tokio::time::sleep(linger).await;
            transaction.commit().await.unwrap();
            (repository.id.clone(), id)
        });
    }
    let mut committed: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for (repository, id) in writers.join_all().await {
        committed.entry(repository).or_default().insert(id);
    }
    // The raw writers' commits wake nobody: the backstop reads them.
    for (name, stream) in [("replica a", &mut on_a), ("replica b", &mut on_b)] {
        let seen = receive(stream, WEBHOOKS + RAW, name).await;
        for (repository, ids) in &committed {
            assert_eq!(
                &seen[repository].iter().copied().collect::<BTreeSet<_>>(),
                ids,
                "{name}, {repository}: an event is missing"
            );
        }
    }
}

/// A writer stalls between its append and its commit, its event's id drawn:
/// writers of every repository, its own included, still commit (there is no
/// commit lock at all), and once the stalled one commits, every stream gets
/// its event, lower than ids committed long before it, and then the rest,
/// each repository in id order. A stalled writer that rolls back leaves no
/// trace and holds nothing up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_that_stalls_before_its_commit_is_delivered_late_in_order_and_blocks_no_writer() {
    let (a, b) = two_replicas().await;
    let tenant = a.tenant("acme").await;
    let slow = a.repository(&tenant, "acme/slow").await;
    let busy = a.repository(&tenant, "acme/busy").await;
    let quiet = a.repository(&tenant, "acme/quiet").await;
    let mut on_a = a.stream(&tenant.token, "on-a", &[], None).await.unwrap();
    let mut on_b = b.stream(&tenant.token, "on-b", &[], None).await.unwrap();

    let mut stalled = a.pool.begin().await.unwrap();
    let late = append_raw(&mut stalled, &slow, "stalled").await;
    let mut abandoned = a.pool.begin().await.unwrap();
    let rolled_back = append_raw(&mut abandoned, &quiet, "rolled-back").await;
    assert!(late < rolled_back);

    // Nobody waits for the stalled writer: each webhook commits and answers,
    // of its repository too.
    let mut busy_ids = Vec::new();
    for n in 0..5 {
        let app = if n % 2 == 0 { &a } else { &b };
        let posted = tokio::time::timeout(WAIT, app.push(&busy, &format!("busy-{n}")))
            .await
            .expect("a webhook commits while another writer stalls");
        busy_ids.push(posted);
    }
    let after = tokio::time::timeout(WAIT, b.push(&slow, "after-the-stall"))
        .await
        .expect("a webhook of the stalled writer's repository commits too");

    abandoned.rollback().await.unwrap();
    stalled.commit().await.unwrap();
    assert!(
        busy_ids.iter().all(|id| late < *id),
        "the late event's id is below ids committed before it"
    );
    assert!(late < after);

    // A transaction that wrote before cannot append: its transaction id could
    // be older than another writer's that drew ids first.
    let mut wrote_first = a.pool.begin().await.unwrap();
    sqlx::query("update repository set name = name where repository_id = $1::uuid")
        .bind(&quiet.id)
        .execute(&mut *wrote_first)
        .await
        .unwrap();
    let refused = sqlx::query("select append_events(array[]::uuid[], array[]::uuid[], array[]::text[], array[]::text[], array[]::text[], array[]::timestamptz[], array[]::jsonb[], array[]::bytea[], array[]::text[], array[]::text[], array[]::text[])")
        .execute(&mut *wrote_first)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("first write of its transaction"),
        "{refused}"
    );
    wrote_first.rollback().await.unwrap();

    for (name, stream) in [("replica a", &mut on_a), ("replica b", &mut on_b)] {
        let seen = receive(stream, 2 + busy_ids.len(), name).await;
        assert_eq!(seen[&slow.id], vec![late, after], "{name}");
        assert_eq!(seen[&busy.id], busy_ids, "{name}");
        assert!(
            !seen.contains_key(&quiet.id),
            "{name}: {rolled_back} rolled back"
        );
    }
    // Nothing else is left to come: a new event is the next one.
    let next = a.push(&busy, "next").await;
    assert_eq!(next_event(&mut on_a, WAIT).await.id, next);
    assert_eq!(next_event(&mut on_b, WAIT).await.id, next);
}

/// An append that fails after taking its repository's lock (here, a tenant
/// that does not exist) releases it: the next writer of that repository, on
/// another connection, is not held up.
#[tokio::test]
async fn a_failed_append_releases_its_repository() {
    let app = spawn_app_with(|_| {}).await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let mut failing = app.pool.acquire().await.unwrap();
    let failed = sqlx::query(
        "select append_events(array[gen_random_uuid()], array[$1::uuid], array['github'], array['push'], \
             array['orphan'], array[now()], array['[]'::jsonb], array[convert_to('{}', 'UTF8')], \
             array[null::text], array[null::text], array[null::text])",
    )
    .bind(&repository.id)
    .execute(&mut *failing)
    .await
    .unwrap_err();
    assert!(
        failed.to_string().contains("event_tenant_id_fkey"),
        "{failed}"
    );
    // `failing` stays open: a lock it kept would hold the next append.
    let mut next = app.pool.acquire().await.unwrap();
    tokio::time::timeout(WAIT, append_raw(&mut next, &repository, "next"))
        .await
        .expect("the repository's lock was released");
    drop(failing);
}

/// `append_events_in_order` tells its caller where the batch stands: the
/// newest transaction below it with events, and whether an older transaction
/// was still running once its rows were in (then the server must read the
/// batch back rather than hand it to its streams).
#[tokio::test]
async fn an_append_says_whether_anything_can_still_commit_below_it() {
    let app = spawn_app_with(|_| {}).await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let append = |delivery: &'static str| {
        sqlx::query_as::<_, (i64, String, i64, bool, Option<i64>)>(
            "select appended_event_id, appended_repository_name, batch_txid, batch_oldest, newest_below \
             from append_events_in_order( \
                 array[(select tenant_id from repository where repository_id = $1::uuid)], array[$1::uuid], \
                 array['github'], array['push'], array[$2], array[now()], array['[]'::jsonb], \
                 array[convert_to('{}', 'UTF8')], array[null::text], array[null::text], array[null::text])",
        )
        .bind(repository.id.clone())
        .bind(delivery)
    };
    let (_, name, first, _, _) = append("first").fetch_one(&app.pool).await.unwrap();
    assert_eq!(name, "acme/app");
    let (_, _, second, _, below) = append("second").fetch_one(&app.pool).await.unwrap();
    assert!(first < second);
    assert_eq!(
        below,
        Some(first),
        "the newest transaction below with events"
    );

    // An older transaction holds an id: anything may still commit below.
    let mut older = app.pool.begin().await.unwrap();
    let older_txid: i64 = sqlx::query_scalar("select pg_current_xact_id()::text::bigint")
        .fetch_one(&mut *older)
        .await
        .unwrap();
    let (_, _, third, oldest, below) = append("third").fetch_one(&app.pool).await.unwrap();
    assert!(older_txid < third);
    assert!(
        !oldest,
        "transaction {older_txid} was running below {third}"
    );
    assert_eq!(below, Some(second));
    older.rollback().await.unwrap();

    // A batch of duplicates only appends nothing, and says nothing.
    let again = append("third").fetch_all(&app.pool).await.unwrap();
    assert!(again.is_empty());
}

/// The events a server's own commits hand to its streams are the events as
/// stored: a stream that reads them from the database later gets exactly the
/// same messages. At least one of them went straight from its commit (other
/// tests' transactions on the same PostgreSQL can make any one of them wait
/// for a read instead).
#[tokio::test]
async fn events_handed_over_by_their_commit_are_the_events_as_stored() {
    let app = spawn_app_with(|_| {}).await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let mut live = app.stream(&tenant.token, "live", &[], None).await.unwrap();
    let from_commits = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(r#"hookrelay_tail_events_total{source="commit"} "#))
            .map_or(0, |value| value.parse().unwrap())
    };
    let mut received = Vec::new();
    // Another test's transaction held open sends every batch meanwhile to
    // the listener: go on until one is handed over (or a minute has passed).
    let started = std::time::Instant::now();
    for n in 0.. {
        let id = app.push(&repository, &format!("d-{n}")).await;
        let event = next_event(&mut live, WAIT).await;
        assert_eq!(event.id, id);
        received.push(event);
        if (n >= 3 && from_commits(&app.metrics().await) > 0)
            || started.elapsed() > Duration::from_secs(60)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        from_commits(&app.metrics().await) > 0,
        "no event went from its commit to the stream"
    );
    // Another consumer, from the start: it reads every one from the database.
    let mut stored = app
        .stream(&tenant.token, "later", &[], Some(0))
        .await
        .unwrap();
    for mut event in received {
        let mut from_database = next_event(&mut stored, WAIT).await;
        assert!(from_database.body == event.body, "event {}: body", event.id);
        (event.body, from_database.body) = (Vec::new(), Vec::new());
        assert_eq!(from_database, event);
    }
}
