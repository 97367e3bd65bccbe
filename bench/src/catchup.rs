//! Catch-up: one consumer reading a large backlog (events per second).

use super::*;

pub(super) async fn load_catchup(
    grpc: &str,
    token: &str,
    repository: &str,
    expect: usize,
) -> anyhow::Result<CatchupLoad> {
    let mut client = EventServiceClient::connect(grpc.to_owned())
        .await?
        .max_decoding_message_size(64 << 20);
    let request = StreamEventsRequest {
        repository_ids: vec![repository.to_owned()],
        consumer: "catchup".into(),
        after_event_id: None,
        ..Default::default()
    };
    let started = Instant::now();
    let mut stream = client
        .stream_events(bearer(request, token))
        .await?
        .into_inner();
    let (mut count, mut bytes) = (0usize, 0usize);
    while count < expect {
        let event = stream.message().await?.context("the stream ended early")?;
        count += 1;
        bytes += event.body.len();
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(CatchupLoad {
        events: count,
        seconds: elapsed,
        per_second: count as f64 / elapsed,
        mib_per_second: bytes as f64 / elapsed / 1048576.0,
    })
}

/// Appends `count` pushes of 2 KiB, interleaved over `repositories`, through
/// the database's `append_events` (the servers' own way in), and wakes the
/// streams as a server does after its commit.
pub(super) async fn append_backlog(
    pool: &sqlx::PgPool,
    repositories: &[String],
    count: i64,
) -> anyhow::Result<()> {
    // In chunks: one transaction holds the repositories' locks while it writes.
    const CHUNK: i64 = 10_000;
    for start in (0..count).step_by(CHUNK as usize) {
        sqlx::query(
            "with input as ( \
                 select r.tenant_id, r.repository_id, g from generate_series($2::bigint, $3::bigint) g \
                 join repository r on r.repository_id = ($1::uuid[])[1 + g % cardinality($1::uuid[])] \
             ), batch as ( \
                 select array_agg(tenant_id order by g) as t, array_agg(repository_id order by g) as r, \
                        array_agg('github'::text) as p, array_agg('push'::text) as e, \
                        array_agg('backlog-' || g order by g) as d, array_agg(now()) as at, \
                        array_agg('[[\"content-type\",\"application/json\"],[\"x-github-event\",\"push\"]]'::jsonb) as h, \
                        array_agg(convert_to(rpad('{\"n\":' || g || ',\"pad\":\"', 2047, 'x') || '}', 'UTF8') order by g) as b, \
                        array_agg(null::text) as n \
                 from input \
             ) \
             select count(*) from batch, append_events(t, r, p, e, d, at, h, b, n, n, n)",
        )
        .bind(repositories)
        .bind(start + 1)
        .bind((start + CHUNK).min(count))
        .execute(pool)
        .await?;
    }
    sqlx::query("select pg_notify('hookrelay_events', 'bench')")
        .execute(pool)
        .await?;
    Ok(())
}

impl Bench {
    /// A second repository filled with `count` events of 2 KiB, straight into the table.
    pub(super) async fn backlog(&self, name: &str, count: i64) -> anyhow::Result<String> {
        let response: Value = reqwest::Client::new()
            .post(format!("{}/v1/repositories", self.http))
            .bearer_auth(&self.token)
            .json(&json!({"provider": "github", "name": name}))
            .send()
            .await?
            .json()
            .await?;
        let id = response["id"].as_str().context("a repository")?.to_owned();
        append_backlog(&self.pool, std::slice::from_ref(&id), count).await?;
        Ok(id)
    }

    pub(super) async fn catchup(&mut self) -> anyhow::Result<()> {
        let count = if self.quick { 20_000 } else { 100_000 };
        let repository = self.backlog("bench/catchup", count).await?;
        let result: CatchupLoad = load(&[
            "load-catchup".into(),
            self.grpc.clone(),
            self.token.clone(),
            repository,
            count.to_string(),
        ])?;
        self.row(
            "catchup",
            format!("{count} events of 2 KiB behind: events/s"),
            format!("{:.0}", result.per_second),
            "≥ 50,000",
        );
        self.results
            .insert("catchup".into(), serde_json::to_value(&result)?);
        Ok(())
    }
}
