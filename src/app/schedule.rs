//! Scheduled batches, declared one per `jobs/*.toml`:
//!
//! ```toml
//! name = "weekly-sellers"
//! cron = "0 0 9 * * Mon"          # the cron crate's syntax (with seconds), UTC unless `timezone`
//! timezone = "America/New_York"   # optional, an IANA name
//! [source]
//! kind = "sql"                    # or "csv" with `path = "inbox/*.csv"` (a glob)
//! database_url = "sqlite://data/marketplace.db"
//! query = "SELECT payee_id, amount, dots_user_id FROM payouts_due"
//! ```
//!
//! Guarantees: a tick makes at most one batch, whatever number of workers see it and even if
//! a worker dies mid-tick — the tick's unique row is written in the batch's own transaction
//! (`store::Tick`). An inbox file becomes a batch exactly once (keyed by schedule and content
//! hash). A tick missed while every worker was down runs once on start-up (`catch_up`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{SubmitError, SubmitOptions, Submitted, submit_file};
use crate::config::Limits;
use crate::jobs::Queue;
use crate::store::{Store, StoreError, Tick, now_ms};

#[derive(Debug, Clone, Deserialize)]
struct ScheduleFile {
    name: String,
    cron: String,
    #[serde(default)]
    timezone: Option<String>,
    source: Source,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// Every new file matching the glob becomes a batch, once.
    Csv { path: String },
    /// The query's rows (the CSV's columns) become a batch each tick.
    Sql { database_url: String, query: String },
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub cron_text: String,
    pub cron: cron::Schedule,
    pub tz: chrono_tz::Tz,
    pub source: Source,
    pub file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads every `*.toml` in `dir` (none if the directory does not exist).
pub fn load_dir(dir: impl AsRef<Path>) -> Result<Vec<Schedule>, ScheduleError> {
    let dir = dir.as_ref();
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out: Vec<Schedule> = Vec::new();
    for f in files {
        let bad = |reason: String| ScheduleError::Invalid {
            file: f.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(&f)?;
        let s: ScheduleFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let cron = cron::Schedule::from_str(&s.cron)
            .map_err(|e| bad(format!("bad cron {:?}: {e}", s.cron)))?;
        let tz = match &s.timezone {
            None => chrono_tz::UTC,
            Some(t) => t
                .parse()
                .map_err(|_| bad(format!("unknown timezone {t:?}")))?,
        };
        if out.iter().any(|o| o.name == s.name) {
            return Err(bad(format!("schedule name {:?} is used twice", s.name)));
        }
        out.push(Schedule {
            name: s.name,
            cron_text: s.cron,
            cron,
            tz,
            source: s.source,
            file: f.clone(),
        });
    }
    Ok(out)
}

/// What one tick did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickOutcome {
    Batches(Vec<String>),
    AlreadyDone,
    Nothing(String),
    Rejected(String),
}

impl TickOutcome {
    pub fn is_failure(&self) -> bool {
        matches!(self, TickOutcome::Rejected(_))
    }
}

impl fmt::Display for TickOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TickOutcome::Batches(b) => write!(f, "made batch(es): {}", b.join(", ")),
            TickOutcome::AlreadyDone => write!(f, "this tick already ran (another worker)"),
            TickOutcome::Nothing(why) => write!(f, "no batch: {why}"),
            TickOutcome::Rejected(why) => write!(f, "rejected: {why}"),
        }
    }
}

/// Runs the schedule for the tick at `tick_at` (unix ms).
pub async fn tick(
    store: &Store,
    queue: &mut Queue,
    s: &Schedule,
    tick_at: i64,
    limits: &Limits,
) -> Result<TickOutcome, ScheduleError> {
    let this_tick = Tick {
        schedule: s.name.clone(),
        at: tick_at,
    };
    match &s.source {
        Source::Csv { path } => {
            let mut made = Vec::new();
            let mut rejected = Vec::new();
            let mut paths: Vec<PathBuf> = glob::glob(path)
                .map_err(|e| ScheduleError::Invalid {
                    file: s.file.display().to_string(),
                    reason: format!("bad glob {path:?}: {e}"),
                })?
                .filter_map(Result::ok)
                .collect();
            paths.sort();
            for p in paths {
                let hash = match crate::intake::validate(std::io::BufReader::new(
                    std::fs::File::open(&p)?,
                )) {
                    Ok(sum) => sum.content_hash,
                    Err(e) => {
                        rejected.push(format!("{}: {e}", p.display()));
                        continue;
                    }
                };
                // One batch per (schedule, file content), ever.
                let file_tick = Tick {
                    schedule: format!("{}#{hash}", s.name),
                    at: 0,
                };
                if store.tick_batch(&file_tick).await?.is_some() {
                    continue;
                }
                let opts = SubmitOptions {
                    limits: *limits,
                    tick: Some(file_tick),
                    allow_duplicate: true,
                    ..Default::default()
                };
                match submit_file(store, queue, &p, &opts).await {
                    Ok(Submitted::New { batch, .. }) => made.push(batch.to_string()),
                    Ok(_) => {}
                    Err(e) if e.is_bad_input() => rejected.push(e.to_string()),
                    Err(e) => return Err(e.into()),
                }
            }
            store.record_tick(&this_tick, "inbox scanned").await?;
            Ok(match (made.is_empty(), rejected.is_empty()) {
                (_, false) => TickOutcome::Rejected(rejected.join("\n")),
                (false, true) => TickOutcome::Batches(made),
                (true, true) => TickOutcome::Nothing("no new file".into()),
            })
        }
        Source::Sql {
            database_url,
            query,
        } => {
            if store.tick_batch(&this_tick).await?.is_some() {
                return Ok(TickOutcome::AlreadyDone);
            }
            let dir = tempfile::tempdir()?;
            let file = dir.path().join(format!("{}-{tick_at}.csv", s.name));
            let rows = crate::store::source::export_query_csv(
                database_url,
                query,
                std::fs::File::create(&file)?,
            )
            .await?;
            if rows == 0 {
                let first = store
                    .record_tick(&this_tick, "query returned no rows")
                    .await?;
                return Ok(if first {
                    TickOutcome::Nothing("the query returned no rows".into())
                } else {
                    TickOutcome::AlreadyDone
                });
            }
            let opts = SubmitOptions {
                limits: *limits,
                tick: Some(this_tick),
                allow_duplicate: true,
                ..Default::default()
            };
            match submit_file(store, queue, &file, &opts).await {
                Ok(Submitted::New { batch, .. }) => {
                    Ok(TickOutcome::Batches(vec![batch.to_string()]))
                }
                Ok(_) => Ok(TickOutcome::AlreadyDone),
                Err(e) if e.is_bad_input() => Ok(TickOutcome::Rejected(query_rejected(&e))),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Why the query's rows were rejected, without the path of the temporary file they went
/// through (it is gone, and means nothing to the reader).
fn query_rejected(e: &SubmitError) -> String {
    match e {
        SubmitError::Invalid { source, .. } => format!("the query's rows: {source}"),
        SubmitError::Rejected { source, .. } => format!("the query's rows: {source}"),
        other => other.to_string(),
    }
}

/// `payrun jobs run NAME`: a tick at the current second.
pub async fn run_now(
    store: &Store,
    queue: &mut Queue,
    s: &Schedule,
    limits: &Limits,
) -> Result<TickOutcome, ScheduleError> {
    tick(store, queue, s, now_ms() / 1000 * 1000, limits).await
}

/// The latest scheduled time at or before `now` that is later than the last recorded tick —
/// a tick missed while no worker ran. None when nothing was missed or the schedule never ran.
pub async fn missed_tick(store: &Store, s: &Schedule, now: i64) -> Result<Option<i64>, StoreError> {
    let Some(last) = store.last_tick(&s.name).await? else {
        return Ok(None);
    };
    let from = chrono::DateTime::from_timestamp_millis(last)
        .unwrap_or_default()
        .with_timezone(&s.tz);
    let missed = s
        .cron
        .after(&from)
        .take_while(|t| t.timestamp_millis() <= now)
        .last();
    Ok(missed.map(|t| t.timestamp_millis()))
}

#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub source: String,
    pub next_run: Option<String>,
    pub last_tick: Option<String>,
}

pub async fn list(store: &Store, schedules: &[Schedule]) -> Result<Vec<ScheduleView>, StoreError> {
    let mut out = Vec::new();
    for s in schedules {
        let next = s.cron.upcoming(s.tz).next().map(|t| t.to_rfc3339());
        let last = store
            .last_tick(&s.name)
            .await?
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339());
        let source = match &s.source {
            Source::Csv { path } => format!("csv {path}"),
            Source::Sql { database_url, .. } => {
                format!("sql {}", crate::store::redact_url(database_url))
            }
        };
        out.push(ScheduleView {
            name: s.name.clone(),
            cron: s.cron_text.clone(),
            timezone: s.tz.to_string(),
            source,
            next_run: next,
            last_tick: last,
        });
    }
    Ok(out)
}
