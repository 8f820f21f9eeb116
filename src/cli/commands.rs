//! One function per subcommand: call the library, print, choose the exit code.

use std::time::Duration;

use anyhow::Context as _;

use super::{
    Cli, Command, Ctx, EventsCommand, JobsCommand, SimArgs, parse_id, print, shutdown_signal,
};
use crate::app::{self, exit, ops};
use crate::batch::{BatchId, ItemId};
use crate::dots::sim::{Sim, SimConfig};
use crate::money::format_cents;

/// A message (errors, outcomes) as printed: store-sourced text in it cannot drive the
/// terminal (`text::printable_lines`).
fn shown(m: &impl std::fmt::Display) -> String {
    crate::text::printable_lines(&m.to_string()).into_owned()
}

/// Returns early with the exit code when an id does not parse.
macro_rules! id {
    ($raw:expr) => {
        match parse_id($raw) {
            Ok(id) => id,
            Err(code) => return Ok(code),
        }
    };
}

/// Prints an `OpsError` as bad input (exit 2) or propagates it.
macro_rules! ops_try {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) if e.is_bad_input() => {
                eprintln!("error: {}", shown(&e));
                return Ok(exit::BAD_INPUT);
            }
            Err(e) => return Err(e.into()),
        }
    };
}

pub(super) async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    if let Command::Demo { demo_database_url } = &cli.command {
        return app::run_demo(app::DemoOptions {
            database_url: demo_database_url.clone(),
            ..Default::default()
        })
        .await;
    }
    if let Command::Sim(args) = &cli.command {
        return run_sim(args).await;
    }
    if let Command::Bench {
        command,
        pg_admin_url,
    } = &cli.command
    {
        use crate::cli::BenchCommand as B;
        match command {
            B::All => crate::bench::all(pg_admin_url).await?,
            B::Ingest { rows, backend } => {
                crate::bench::ingest(*backend, *rows, pg_admin_url).await?
            }
            B::Throughput {
                items,
                backend,
                concurrency,
                no_prune,
                transfer_mode,
            } => {
                crate::bench::throughput(
                    *backend,
                    items,
                    *concurrency,
                    !*no_prune,
                    *transfer_mode,
                    pg_admin_url,
                )
                .await?
            }
            B::Api {
                items,
                latency_ms,
                rate,
                backend,
                transfer_mode,
            } => {
                crate::bench::api(
                    *backend,
                    *items,
                    *latency_ms,
                    *rate,
                    *transfer_mode,
                    pg_admin_url,
                )
                .await?
            }
            B::Memory { items, backend } => {
                crate::bench::memory(*backend, *items, pg_admin_url).await?
            }
        }
        return Ok(exit::OK);
    }
    // A bad config (unknown key, bad value, unreadable --config) is bad input: exit 2.
    let ctx = match Ctx::load(&cli) {
        Ok(ctx) => ctx,
        Err(e) if e.is::<crate::config::ConfigError>() => {
            eprintln!("error: {}", shown(&e));
            return Ok(exit::BAD_INPUT);
        }
        Err(e) => return Err(e),
    };
    let store = ctx.store().await?;
    // Every command registers the configured event endpoints, so an event written before any
    // worker ran (e.g. by `submit`) is fanned out to them.
    for e in &ctx.settings.events.endpoints {
        store
            .register_endpoint(&e.name, e.types.as_deref(), crate::store::now_ms())
            .await?;
    }
    match &cli.command {
        Command::Demo { .. } | Command::Sim(_) | Command::Bench { .. } => {
            unreachable!("handled above")
        }
        Command::Submit {
            file,
            dry_run,
            allow_duplicate,
        } => {
            let opts = app::SubmitOptions {
                dry_run: *dry_run,
                allow_duplicate: *allow_duplicate,
                limits: ctx.settings.limits,
                ..Default::default()
            };
            let mut queue = ctx.queue(&store);
            match app::submit_file(&store, &mut queue, file, &opts).await {
                Ok(sub) => {
                    print::submitted(&sub);
                    if matches!(sub, app::Submitted::DryRun { .. }) {
                        let dots = ctx.dots().ok();
                        let now = crate::store::now_ms();
                        let w = &ctx.settings.worker;
                        let routes =
                            app::routes::route_counts(&store, dots.as_ref(), file, w, now).await?;
                        print::routes(&routes);
                    }
                    if let app::Submitted::DryRun { summary, .. } = &sub
                        && let Some(w) = ctx
                            .wallet()?
                            .view(&store, None, summary.total_cents)
                            .await?
                    {
                        println!("{}", w.line());
                    }
                    Ok(exit::OK)
                }
                Err(e) if e.is_bad_input() => {
                    eprintln!("error: {}", shown(&e));
                    Ok(exit::BAD_INPUT)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Serve { listen } => {
            let engine = ctx.engine(&store)?;
            // A token too short to be one stops serve at start-up (exit 1, like bad config).
            let dashboard = match std::env::var("PAYRUN_DASHBOARD_TOKEN") {
                Ok(t) if !t.is_empty() => Some(app::dashboard::DashboardOptions {
                    token: app::dashboard::DashboardToken::new(&t)?,
                    secure_cookie: ctx.settings.dashboard.secure_cookie.resolve(listen),
                }),
                _ => None,
            };
            let router = app::serve::router(
                engine,
                ctx.queue(&store),
                ctx.settings
                    .dots
                    .webhook_secret
                    .as_ref()
                    .map(|s| s.expose()),
                dashboard,
            )?;
            app::serve::serve(listen, router, shutdown_signal()).await?;
            Ok(exit::OK)
        }
        Command::Worker {
            concurrency,
            health_listen,
        } => {
            let mut settings = ctx.settings.clone();
            if let Some(c) = concurrency {
                settings.worker.concurrency = *c;
            }
            let engine = Ctx {
                settings: settings.clone(),
            }
            .engine(&store)?;
            if let Some(addr) = health_listen {
                app::serve::spawn_health(addr.clone(), store.clone(), engine.health.clone());
            }
            let schedules = app::schedule::load_dir(&settings.schedules.dir)?;
            app::work_until_with(engine, schedules, &settings, shutdown_signal()).await?;
            Ok(exit::OK)
        }
        Command::Run {
            file,
            allow_duplicate,
        } => {
            let opts = app::SubmitOptions {
                allow_duplicate: *allow_duplicate,
                limits: ctx.settings.limits,
                ..Default::default()
            };
            let mut queue = ctx.queue(&store);
            let sub = match app::submit_file(&store, &mut queue, file, &opts).await {
                Ok(sub) => sub,
                Err(e) if e.is_bad_input() => {
                    eprintln!("error: {}", shown(&e));
                    return Ok(exit::BAD_INPUT);
                }
                Err(e) => return Err(e.into()),
            };
            print::submitted(&sub);
            let batch = sub.batch().expect("not a dry run");
            if let app::Submitted::New {
                awaiting_approval: true,
                ..
            } = sub
            {
                eprintln!("the batch waits for `payrun approve {batch}`; nothing paid yet");
                return Ok(exit::FAILED);
            }
            let engine = ctx.engine(&store)?;
            let bars = print::Bars::new(&store, batch).await?;
            let watch = store.clone();
            // Settled, or SIGINT/SIGTERM: either ends the worker gracefully (jobs in flight
            // finish and release their items), never by dropping it mid-call.
            let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = interrupted.clone();
            let until = async move {
                tokio::select! {
                    _ = app::wait_settled(&watch, batch, Duration::from_millis(500), |c| {
                        bars.update(c)
                    }) => {}
                    _ = shutdown_signal() => flag.store(true, std::sync::atomic::Ordering::SeqCst),
                }
            };
            app::work_until(engine, until).await?;
            let status = app::batch_status(&store, batch)
                .await?
                .expect("batch exists");
            print::status(&status);
            let failed = status
                .states
                .iter()
                .any(|s| s.state == "failed" && s.items > 0);
            if interrupted.load(std::sync::atomic::Ordering::SeqCst) && !status.settled {
                eprintln!(
                    "interrupted; jobs in flight finished, the rest waits: run `payrun worker` to finish batch {batch}"
                );
            }
            Ok(if failed || !status.settled {
                exit::FAILED
            } else {
                exit::OK
            })
        }
        Command::Status { batch, json, watch } => {
            let list = match batch {
                Some(b) => {
                    let id: BatchId = id!(b);
                    if *watch {
                        let bars = print::Bars::new(&store, id).await?;
                        tokio::select! {
                            r = app::wait_settled(&store, id, Duration::from_millis(500), |c| bars.update(c)) => r?,
                            _ = shutdown_signal() => {}
                        }
                    }
                    match app::batch_status(&store, id).await? {
                        Some(mut st) => {
                            st.wallet = ctx.wallet()?.view(&store, Some(id), 0).await?;
                            vec![st]
                        }
                        None => {
                            eprintln!("error: no batch {id}; `payrun status` lists batches");
                            return Ok(exit::BAD_INPUT);
                        }
                    }
                }
                None => app::list_status(&store, 50).await?,
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no batches yet; `payrun submit FILE` stores one");
            } else {
                list.iter().for_each(print::status);
            }
            Ok(exit::OK)
        }
        Command::Show { item, json } => {
            let id: ItemId = id!(item);
            let view = ops_try!(ops::show(&store, id).await);
            if *json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print::item(&view);
            }
            Ok(exit::OK)
        }
        Command::Report { batch, output } => {
            let id: BatchId = id!(batch);
            if store.batch(id).await?.is_none() {
                eprintln!("error: no batch {id}; `payrun status` lists batches");
                return Ok(exit::BAD_INPUT);
            }
            let n = match output {
                Some(path) => {
                    let f = std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    app::write_report(&store, id, f).await?
                }
                None => app::write_report(&store, id, std::io::stdout().lock()).await?,
            };
            eprintln!("{n} items");
            Ok(exit::OK)
        }
        Command::Audit { batch, json } => {
            let id: BatchId = id!(batch);
            if store.batch(id).await?.is_none() {
                eprintln!("error: no batch {id}; `payrun status` lists batches");
                return Ok(exit::BAD_INPUT);
            }
            let r = app::audit::audit_batch(&store, &ctx.dots()?, id).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print::audit(id, &r);
            }
            Ok(if r.ok() { exit::OK } else { exit::FAILED })
        }
        Command::Approve { batch } => {
            let id: BatchId = id!(batch);
            let mut queue = ctx.queue(&store);
            if ops_try!(ops::approve(&store, &mut queue, id).await) {
                println!("batch {id} approved; a running worker pays it now");
            } else {
                println!("batch {id} was not awaiting approval; nothing to do");
            }
            Ok(exit::OK)
        }
        Command::Pause(a) | Command::Resume(a) => {
            let target = match &a.batch {
                Some(b) if !a.all => app::control::Target::Batch(id!(b)),
                _ => app::control::Target::All,
            };
            let out = if matches!(cli.command, Command::Pause(_)) {
                ops_try!(app::control::pause(&store, target).await)
            } else {
                let mut queue = ctx.queue(&store);
                ops_try!(app::control::resume(&store, &mut queue, target).await)
            };
            println!("{}", shown(&out.message));
            Ok(exit::OK)
        }
        Command::Cancel { batch, item, json } => {
            let id: BatchId = id!(batch);
            let item: Option<ItemId> = match item {
                Some(i) => Some(id!(i)),
                None => None,
            };
            let r = ops_try!(ops::cancel(&store, id, item).await);
            print::ops("canceled", &r, *json)?;
            Ok(exit::OK)
        }
        Command::Rerun {
            batch, item, json, ..
        } => {
            let id: BatchId = id!(batch);
            let item: Option<ItemId> = match item {
                Some(i) => Some(id!(i)),
                None => None,
            };
            let mut queue = ctx.queue(&store);
            let r = ops_try!(ops::rerun(&store, &mut queue, id, item).await);
            print::ops("rerun", &r, *json)?;
            if !r.done.is_empty() {
                eprintln!("a running worker picks them up (or `payrun worker`)");
            }
            Ok(exit::OK)
        }
        Command::RetryFlow { item } => {
            let id: ItemId = id!(item);
            let mut queue = ctx.queue(&store);
            match ops_try!(ops::retry_flow(&store, &mut queue, id).await) {
                Ok(was) => println!(
                    "item {id} was {was}; a new flow link is being made (see `payrun show {id}`)"
                ),
                Err(why) => println!("item {id}: {}", shown(&why)),
            }
            Ok(exit::OK)
        }
        Command::Events { command } => events(&store, command).await,
        Command::Jobs { command } => {
            let schedules = app::schedule::load_dir(&ctx.settings.schedules.dir)?;
            match command {
                JobsCommand::List { json } => {
                    let list = app::schedule::list(&store, &schedules).await?;
                    if *json {
                        println!("{}", serde_json::to_string_pretty(&list)?);
                    } else {
                        print::schedules(&list);
                    }
                    Ok(exit::OK)
                }
                JobsCommand::Run { name } => {
                    let Some(s) = schedules.iter().find(|s| &s.name == name) else {
                        eprintln!("error: no schedule {name:?}; `payrun jobs list` shows them");
                        return Ok(exit::BAD_INPUT);
                    };
                    let mut queue = ctx.queue(&store);
                    let out =
                        app::schedule::run_now(&store, &mut queue, s, &ctx.settings.limits).await?;
                    // A rejected source is bad input (its rows): exit 2, like a rejected file.
                    if out.is_failure() {
                        eprintln!("error: schedule {name:?} {}", shown(&out));
                        return Ok(exit::BAD_INPUT);
                    }
                    println!("{}", shown(&out));
                    Ok(exit::OK)
                }
            }
        }
    }
}

async fn events(store: &crate::store::Store, command: &EventsCommand) -> anyhow::Result<i32> {
    use app::events::{EventsError, ReplayArg};
    let result = match command {
        EventsCommand::List {
            batch,
            failed,
            json,
        } => {
            let batch: Option<BatchId> = match batch {
                Some(b) => Some(id!(b)),
                None => None,
            };
            let batch = batch.map(|b| b.to_string());
            app::events::list(store, batch.as_deref(), *failed, 1000)
                .await
                .map(|list| {
                    if *json {
                        serde_json::to_string_pretty(&list).map(|s| println!("{s}"))
                    } else {
                        if list.is_empty() {
                            println!("no events yet");
                        }
                        list.iter().for_each(print::event);
                        Ok(())
                    }
                })
        }
        EventsCommand::Replay {
            event,
            batch,
            since,
        } => {
            let which = match (event, batch, since) {
                (Some(e), _, _) => ReplayArg::Event(e),
                (_, Some(b), _) => {
                    let _: BatchId = id!(b);
                    ReplayArg::Batch(b)
                }
                (_, _, Some(t)) => ReplayArg::Since(t),
                _ => unreachable!("clap requires one"),
            };
            app::events::replay(store, which, crate::store::now_ms())
                .await
                .map(|n| {
                    println!(
                        "{n} events replayed: their deliveries to every matching endpoint are pending again"
                    );
                    Ok(())
                })
        }
    };
    match result {
        Ok(printed) => {
            printed?;
            Ok(exit::OK)
        }
        Err(e @ EventsError::BadInput(_)) => {
            eprintln!("error: {}", shown(&e));
            Ok(exit::BAD_INPUT)
        }
        Err(e) => Err(e.into()),
    }
}

async fn run_sim(a: &SimArgs) -> anyhow::Result<i32> {
    let mut c: SimConfig = match &a.sim_config {
        Some(p) => toml::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )?,
        None => SimConfig::default(),
    };
    if let Ok(v) = std::env::var("DOTS_CLIENT_ID") {
        c.client_id = v;
    }
    if let Ok(v) = std::env::var("DOTS_API_KEY") {
        c.api_key = v.into();
    }
    macro_rules! set { ($($f:ident => $k:ident),*) => { $( if let Some(v) = a.$f { c.$k = v; } )* } }
    set!(complete_after => complete_after_secs, never_complete => never_complete, latency_ms => latency_ms,
         error_rate => error_rate, drop_rate => drop_rate, throttle_rate => throttle_rate, stall_rate => stall_rate);
    if a.rate_limit.is_some() {
        c.rate_limit = a.rate_limit;
    }
    if a.webhook_url.is_some() {
        c.webhook_url = a.webhook_url.clone();
    }
    if let Some(cents) = a.app_wallet {
        c.app_wallet_cents = cents;
    }
    if let Some(id) = a.app_id {
        c.app_id = id;
    }
    if let Ok(v) = std::env::var("DOTS_WEBHOOK_SECRET") {
        c.webhook_secret = Some(v.into());
    }
    let handle = Sim::new(c)
        .spawn(&a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    eprintln!(
        "Dots simulator serving {} (ledger: http://{}/_sim/ledger)",
        handle.base_url, handle.addr
    );
    let cfg = handle.sim.config();
    eprintln!(
        "app id {} (DOTS_APP_ID), App wallet ${} (add with POST http://{}/_sim/fund {{\"cents\": N}})",
        cfg.app_id,
        format_cents(cfg.app_wallet_cents),
        handle.addr
    );
    shutdown_signal().await;
    Ok(exit::OK)
}
