//! The `cosell-sync` command line: parse, set up logging, load settings, call
//! the library, map errors to exit codes (0 ok, 1 failure, 2 usage, 75 the
//! state store is held by another writer, 78 config).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use cosell_sync::commands::{self, CommandError, exit};
use cosell_sync::config::{self, LogFormat, Settings, Sources};
use cosell_sync::domain::Stage;
use cosell_sync::store::ReferralFilter;

// glibc's allocator slowed to a crawl scanning its free lists once a process
// held a few GiB of small JSON values (the benchmark's simulator at 100,000
// referrals); mimalloc does not. Built with transparent huge pages off, so a
// small daemon is not rounded up to 2 MiB pages (24 vs 57 MiB peak RSS).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (its position in `mi_option_t`, the same
/// in mimalloc 2 and 3; the Rust bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed pages before it returns them to the kernel,
/// in milliseconds. Its default (1 s) keeps a whole batch's freed pages
/// resident while the next batch allocates anew. At 100 ms a Dataverse
/// backfill still rose past 32 MiB at times (11 of 50 runs at 1,000 above
/// 31 MiB); at 50 ms none of 50 did, for about 5,000 more page faults per
/// 10,000 referrals. 10 ms cost CPU in purges and faults (BENCHMARKS.md).
/// `MIMALLOC_PURGE_DELAY` in the environment wins.
const PURGE_DELAY_MS: std::ffi::c_long = 50;

/// Allocator options, set before any other thread starts.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one process-wide option; no other thread exists yet.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "cosell-sync",
    version,
    about = "Keeps Microsoft Partner Center co-sell referrals and Dynamics 365 / Salesforce opportunities in step",
    propagate_version = true
)]
struct Cli {
    /// Configuration file (TOML); layered over the built-in defaults.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format: pretty (terminal) or json (journald, log shippers).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    /// Log level or filter, e.g. "debug" or "info,cosell_sync=trace" (RUST_LOG wins).
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormatArg {
    Pretty,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(
        after_help = "Example:\n  cosell-sync --config /etc/cosell-sync/cosell-sync.toml config validate"
    )]
    /// Check or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    #[command(after_help = "Example:\n  cosell-sync --config /etc/cosell-sync/acme.toml status")]
    /// Counts by tab and stage, cursors, recent runs and open failures.
    Status(JsonFlag),
    #[command(after_help = "Example:\n  cosell-sync referrals list --inbound --stage received")]
    /// Referrals as last synced.
    #[command(subcommand)]
    Referrals(ReferralsCommand),
    #[command(after_help = "Example:\n  cosell-sync failures list")]
    /// Records that could not be synced.
    #[command(subcommand)]
    Failures(FailuresCommand),
    #[command(
        after_help = "Example:\n  cosell-sync --config /etc/cosell-sync/cosell-sync.toml --log-format json run"
    )]
    /// The daemon: a sync cycle every `sync.interval`, SIGHUP reloads, SIGTERM stops cleanly.
    Run,
    #[command(after_help = "Example:\n  cosell-sync sync --once --dry-run")]
    /// Run one sync cycle and print what it did.
    Sync {
        /// One cycle, then exit (the only mode of `sync`; `run` is the daemon).
        #[arg(long)]
        once: bool,
        /// Plan and print the operations; write nothing anywhere, the state store included.
        #[arg(long)]
        dry_run: bool,
        /// Re-read everything instead of the changes since the last cycle.
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    #[command(after_help = "Example:\n  cosell-sync resync --since 2025-03-01")]
    /// Backfill or full reconcile: re-read all referrals (or those changed since DATE) and every linked opportunity.
    Resync {
        /// Re-read Partner Center from this date (2025-03-01) or date-time.
        #[arg(long, value_parser = commands::parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Also bring won, lost, declined and expired referrals into the CRMs, closed with their outcome and reason.
        #[arg(long)]
        include_archived: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    #[cfg(feature = "sim")]
    #[command(after_help = "Example:\n  cosell-sync demo")]
    /// Watch referrals flow both ways through the built-in simulator (no credentials).
    Demo,
    #[cfg(feature = "sim")]
    #[command(after_help = "Example:\n  cosell-sync bench --smoke --out /tmp/bench.json")]
    /// Measure throughput, API calls, steady-state cost and memory against the simulator.
    Bench {
        /// Backfill sizes, e.g. 1000,10000,100000 (the default).
        #[arg(long, value_delimiter = ',')]
        sizes: Option<Vec<usize>>,
        /// Where to write the JSON result.
        #[arg(long, default_value = "bench.json")]
        out: PathBuf,
        /// A quick run of every scenario at a small size.
        #[arg(long)]
        smoke: bool,
        /// Run the backfills in this process instead of a child `sync --once`
        /// (peak memory then includes the simulator).
        #[arg(long)]
        in_process: bool,
        /// Run each engine phase with this binary (or wrapper script, which
        /// gets the arguments to pass on) instead of this one, e.g. to profile the engine.
        #[arg(long, conflicts_with = "in_process")]
        engine: Option<PathBuf>,
        /// CRM sets to run each size with, each on a fresh simulator:
        /// salesforce, dynamics (the default: both of these, separately), both.
        #[arg(long, value_delimiter = ',', value_parser = parse_crms)]
        crms: Option<Vec<cosell_sync::bench::Crms>>,
    },
    #[cfg(feature = "sim")]
    #[command(hide = true)]
    /// One engine cycle for `bench`, in its own process: what `sync --once`
    /// runs, on the simulator's clock. Prints the cycle's summary as JSON.
    BenchCycle {
        /// How far the simulator's clock is ahead of this machine's, in ms.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        clock_offset_ms: i64,
        /// A full reconcile.
        #[arg(long)]
        full: bool,
    },
    #[cfg(feature = "sim")]
    #[command(
        after_help = "Example:\n  cosell-sync simulate --listen 127.0.0.1:8080 --referrals 100"
    )]
    /// Serve fake Entra ID, Partner Center, Dynamics 365 and Salesforce APIs on loopback.
    Simulate {
        /// Address to listen on (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Seed of the generated sample data.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Number of sample referrals.
        #[arg(long, default_value_t = 40)]
        referrals: usize,
        /// The Salesforce org has Data.com fields (Account.DunsNumber).
        #[arg(long)]
        salesforce_data_com: bool,
        /// The Salesforce org has multiple currencies (Opportunity.CurrencyIsoCode).
        #[arg(long)]
        salesforce_multi_currency: bool,
    },
    /// Ask the running daemon's /readyz (or /healthz): exit 0 on 200, else 1 (a container HEALTHCHECK).
    #[command(after_help = "Example:\n  cosell-sync --config /etc/cosell-sync/acme.toml health")]
    Health {
        /// Ask /healthz (the loop makes progress) instead of /readyz (synced recently, nothing waits for an operator).
        #[arg(long)]
        live: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(
        after_help = "Example:\n  cosell-sync completions bash > /etc/bash_completion.d/cosell-sync"
    )]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout.
    #[command(
        after_help = "Example:\n  cosell-sync manpage | gzip > /usr/share/man/man1/cosell-sync.1.gz"
    )]
    Manpage,
    #[command(after_help = "Example:\n  cosell-sync login partner-center")]
    /// Sign in to a service interactively and keep the result in the state store.
    #[command(subcommand)]
    Login(LoginCommand),
}

#[derive(Subcommand, Debug)]
enum LoginCommand {
    #[command(
        after_help = "Example:\n  cosell-sync --config /etc/cosell-sync/cosell-sync.toml login partner-center"
    )]
    /// Device-code sign-in for the Referrals API (account with the Referrals Admin role).
    PartnerCenter,
}

#[derive(Args, Debug)]
struct JsonFlag {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    #[command(
        after_help = "Example:\n  cosell-sync --config /etc/cosell-sync/cosell-sync.toml config validate --online"
    )]
    /// Check every setting, credential and mapping; exits 78 naming what is wrong.
    Validate {
        /// Also check the CRMs' metadata (fields, keys, stages) and the Partner Center sign-in.
        #[arg(long)]
        online: bool,
    },
    #[command(after_help = "Example:\n  cosell-sync config show")]
    /// Print the effective settings with secrets redacted.
    Show,
}

#[derive(Subcommand, Debug)]
enum ReferralsCommand {
    #[command(after_help = "Example:\n  cosell-sync referrals list --favorites --limit 20")]
    /// List referrals, most recently updated first.
    List {
        /// Inbound referrals (sent to you).
        #[arg(long)]
        inbound: bool,
        /// Outbound referrals (created by you).
        #[arg(long)]
        outbound: bool,
        /// Referrals marked as favorite.
        #[arg(long)]
        favorites: bool,
        /// Only this stage: received, accepted, won, lost, declined, expired.
        #[arg(long, value_parser = parse_stage)]
        stage: Option<Stage>,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        json: JsonFlag,
    },
    #[command(
        after_help = "Example:\n  cosell-sync referrals favorite 2b1ae4a1-55c4-4c80-9e24-6f3c2a9d7e10 --off"
    )]
    /// Mark a referral as favorite in Partner Center (or remove the mark with --off).
    Favorite {
        /// The Partner Center referral id.
        id: String,
        /// Remove it from favorites.
        #[arg(long)]
        off: bool,
    },
    #[command(
        after_help = "Example:\n  cosell-sync referrals show 2b1ae4a1-55c4-4c80-9e24-6f3c2a9d7e10 --json"
    )]
    /// One referral with its CRM links, failures and sync history.
    Show {
        /// The Partner Center referral id.
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Subcommand, Debug)]
enum FailuresCommand {
    #[command(after_help = "Example:\n  cosell-sync failures list --all --json")]
    /// Open failures (quarantined or failing records) with an operator hint.
    List {
        /// Include resolved and ignored ones.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    #[command(after_help = "Example:\n  cosell-sync failures retry 12")]
    /// Put a quarantined record back in the queue.
    Retry {
        /// The failure number from `failures list`.
        id: i64,
    },
    #[command(after_help = "Example:\n  cosell-sync failures ignore 12")]
    /// Stop reporting a failure.
    Ignore {
        /// The failure number from `failures list`.
        id: i64,
    },
}

#[cfg(feature = "sim")]
fn parse_crms(s: &str) -> Result<cosell_sync::bench::Crms, String> {
    cosell_sync::bench::Crms::parse(s)
        .ok_or_else(|| format!("{s:?}: expected salesforce, dynamics or both"))
}

fn parse_stage(s: &str) -> Result<Stage, String> {
    Stage::parse(s).ok_or_else(|| {
        format!(
            "unknown stage {s:?}; expected one of received, accepted, won, lost, declined, expired"
        )
    })
}

fn apply_overrides(settings: &mut Settings, format: Option<LogFormatArg>, level: Option<&str>) {
    if let Some(f) = format {
        settings.log.format = match f {
            LogFormatArg::Pretty => LogFormat::Pretty,
            LogFormatArg::Json => LogFormat::Json,
        };
    }
    if let Some(level) = level {
        settings.log.level = level.to_owned();
    }
}

fn load_settings(cli: &Cli) -> Result<Settings, CommandError> {
    let mut settings = config::load(&Sources::from_process(cli.config.clone()))?;
    apply_overrides(&mut settings, cli.log_format, cli.log_level.as_deref());
    Ok(settings)
}

/// `completions SHELL`: the script clap_complete generates from the clap
/// definitions above.
fn completions(shell: clap_complete::Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "cosell-sync", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `manpage`: cosell-sync(1) in roff, generated from the clap definitions.
fn manpage() -> Result<String, CommandError> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .map_err(|e| CommandError::Failed(format!("rendering the manual page: {e}")))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

async fn run(cli: Cli) -> Result<String, CommandError> {
    // These need no settings: they work before any configuration exists.
    match cli.command {
        Command::Completions { shell } => return Ok(completions(shell)),
        Command::Manpage => return manpage(),
        _ => {}
    }
    let settings = load_settings(&cli)?;
    cosell_sync::telemetry::init(settings.log.format, &settings.log.level)
        .map_err(|e| CommandError::Usage(format!("--log-level: {e}")))?;
    tracing::debug!(command = ?cli.command, "starting");
    match cli.command {
        Command::Config(ConfigCommand::Validate { online: false }) => {
            commands::config_validate(&settings)
        }
        Command::Config(ConfigCommand::Validate { online: true }) => {
            commands::config_validate_online(&settings).await
        }
        Command::Sync {
            once: _,
            dry_run,
            full,
            json,
        } => {
            let opts = cosell_sync::sync::CycleOptions {
                dry_run,
                full,
                since: None,
                include_archived: false,
            };
            commands::sync_once(&settings, opts, "sync --once", json.json).await
        }
        Command::Resync {
            since,
            include_archived,
            json,
        } => {
            let opts = cosell_sync::sync::CycleOptions {
                dry_run: false,
                full: since.is_none(),
                since,
                include_archived,
            };
            commands::sync_once(&settings, opts, "resync", json.json).await
        }
        Command::Run => {
            let file = cli.config.clone();
            let (format, level) = (cli.log_format, cli.log_level.clone());
            commands::run_daemon(&settings, move || {
                let mut s = config::load(&Sources::from_process(file.clone()))?;
                apply_overrides(&mut s, format, level.as_deref());
                Ok(s)
            })
            .await
        }
        #[cfg(feature = "sim")]
        Command::Bench {
            sizes,
            out,
            smoke,
            in_process,
            engine,
            crms,
        } => {
            let run = commands::BenchRun {
                sizes,
                crms,
                smoke,
                in_process,
                engine,
            };
            commands::bench(run, &out, |text| {
                println!("{text}");
                let _ = std::io::stdout().flush();
            })
            .await
        }
        #[cfg(feature = "sim")]
        Command::BenchCycle {
            clock_offset_ms,
            full,
        } => commands::bench_cycle(&settings, full, clock_offset_ms).await,
        #[cfg(feature = "sim")]
        Command::Demo => {
            cosell_sync::demo::run(|text| {
                println!("{text}");
                let _ = std::io::stdout().flush();
            })
            .await
            .map_err(|e| CommandError::Failed(e.to_string()))?;
            Ok(String::new())
        }
        #[cfg(feature = "sim")]
        Command::Simulate {
            listen,
            seed,
            referrals,
            salesforce_data_com,
            salesforce_multi_currency,
        } => {
            let opts = cosell_sync::sim::SimOptions {
                listen,
                seed,
                referrals,
                salesforce_data_com,
                salesforce_multi_currency,
                ..Default::default()
            };
            commands::simulate(opts, |text| {
                println!("{text}");
                let _ = std::io::stdout().flush();
            })
            .await
        }
        Command::Config(ConfigCommand::Show) => Ok(commands::config_show(&settings)),
        Command::Status(f) => commands::status(&settings, f.json),
        Command::Referrals(ReferralsCommand::List {
            inbound,
            outbound,
            favorites,
            stage,
            limit,
            json,
        }) => commands::referrals_list(
            &settings,
            &ReferralFilter {
                inbound,
                outbound,
                favorites,
                stage,
                limit,
            },
            json.json,
        ),
        Command::Referrals(ReferralsCommand::Show { id, json }) => {
            commands::referrals_show(&settings, &id, json.json)
        }
        Command::Failures(FailuresCommand::List { all, json }) => {
            commands::failures_list(&settings, all, json.json)
        }
        Command::Failures(FailuresCommand::Retry { id }) => commands::failures_retry(&settings, id),
        Command::Failures(FailuresCommand::Ignore { id }) => {
            commands::failures_ignore(&settings, id)
        }
        Command::Referrals(ReferralsCommand::Favorite { id, off }) => {
            commands::referrals_favorite(&settings, &id, !off).await
        }
        Command::Health { live } => commands::health(&settings, live).await,
        Command::Completions { shell } => Ok(completions(shell)),
        Command::Manpage => manpage(),
        Command::Login(LoginCommand::PartnerCenter) => {
            commands::login_partner_center(&settings, |prompt| {
                println!("{prompt}");
                let _ = std::io::stdout().flush();
            })
            .await
        }
    }
}

fn main() -> ExitCode {
    tune_allocator();
    // What `#[tokio::main]` builds, after the allocator is tuned.
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(cli_main()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

async fn cli_main() -> ExitCode {
    // clap prints help/version with exit 0 and usage errors with exit 2.
    let cli = Cli::parse();
    match run(cli).await {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = stdout.write_all(out.as_bytes());
            let _ = stdout.flush();
            ExitCode::from(exit::OK)
        }
        Err(CommandError::Incomplete { report, reason }) => {
            print!("{report}");
            let _ = std::io::stdout().flush();
            eprintln!("error: {reason}");
            ExitCode::from(exit::FAILURE)
        }
        Err(e) => {
            let code = e.exit_code();
            let err = anyhow::Error::new(e);
            eprintln!("error: {err:#}");
            if let Some(hint) = err
                .downcast_ref::<CommandError>()
                .and_then(CommandError::hint)
            {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod allocator_tests {
    use super::*;

    /// The option index is mimalloc's purge delay: its documented default
    /// (1 s) before, ours after.
    #[test]
    fn the_purge_delay_is_the_option_tuned() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads one process-wide option.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(before, 1000, "mimalloc's default purge delay");
        tune_allocator();
        // SAFETY: as above.
        let after = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(after, PURGE_DELAY_MS);
    }
}
