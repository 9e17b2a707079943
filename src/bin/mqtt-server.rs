//! The `mqtt-server` daemon: runs the broker from the embedded default configuration or a TOML
//! file, with a few command-line overrides, until SIGINT or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mqtt_server::Broker;
use mqtt_server::config::{self, Config};

/// An MQTT 5.0 / 3.1.1 / 3.1 broker.
#[derive(Debug, Parser)]
#[command(name = "mqtt-server", version, about)]
struct Args {
    /// Configuration file (TOML). Without it the embedded default is used: one listener on
    /// 127.0.0.1:1883 admitting anonymous clients.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Port of the first listener (0 picks a free port).
    #[arg(short, long)]
    port: Option<u16>,
    /// Address of the first listener: an IP (keeps the port) or IP:PORT.
    #[arg(short, long, value_name = "ADDR")]
    bind: Option<String>,
    /// Log level or tracing filter (overrides `log_level`; RUST_LOG overrides both).
    #[arg(short, long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Print the embedded default configuration (a commented TOML file) and exit.
    #[arg(long)]
    print_default_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Subcommands (without one, the broker runs).
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Add, update or delete a user in a password file (Mosquitto's format, as
    /// `mosquitto_passwd`): `mqtt-server passwd [-c] [-b] [-D] FILE USER [PASSWORD]`.
    Passwd(PasswdArgs),
    /// Work with a persistence store: `mqtt-server store inspect PATH` prints what it holds.
    #[command(subcommand)]
    Store(StoreCommand),
}

/// `mqtt-server store ...`.
#[derive(Debug, clap::Subcommand)]
enum StoreCommand {
    /// Print the sessions (subscriptions, queue depths, in-flight QoS 2 state, delayed wills)
    /// and retained messages a store holds. PATH is the store directory (`persistence.path`);
    /// the broker using it must be stopped (the store is locked while it runs).
    Inspect {
        /// The store directory.
        path: PathBuf,
    },
}

/// `mqtt-server passwd` arguments (the flags of `mosquitto_passwd`).
#[derive(Debug, clap::Args)]
struct PasswdArgs {
    /// Create a new password file, overwriting an existing one.
    #[arg(short = 'c')]
    create: bool,
    /// Batch mode: take the password from the command line (it may then show in the process
    /// list and shell history).
    #[arg(short = 'b')]
    batch: bool,
    /// Delete USER from the file.
    #[arg(short = 'D', conflicts_with_all = ["batch", "create"])]
    delete: bool,
    /// The password file.
    file: PathBuf,
    /// The user name.
    user: String,
    /// The password (with -b only; otherwise it is asked for twice on the terminal).
    password: Option<String>,
}

/// How often the daemon hands freed heap memory back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const HEAP_TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts a thread that gives the memory freed after a burst (a connection flood, a backlog
/// drained) back to the system every [`HEAP_TRIM_INTERVAL`]. glibc's allocator keeps freed
/// memory of its per-thread arenas for reuse: without this, RSS stays at a flood's peak (25 MiB
/// after 5 000 half-open sockets, against 6 MiB idle) until the memory happens to be reused.
/// Measured alternatives (docs/reliability.md, "Allocator"): jemalloc returns it too but holds
/// 5-8 times more memory at peak under 4 KiB-message load; mimalloc doubles the idle footprint.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn spawn_heap_trimmer() {
    let spawned = std::thread::Builder::new()
        .name("heap-trim".into())
        .spawn(|| {
            loop {
                std::thread::sleep(HEAP_TRIM_INTERVAL);
                // SAFETY: malloc_trim(3) takes no pointer and has no precondition: glibc takes
                // each arena's lock while it releases that arena's free pages, so it may be
                // called from any thread at any time, concurrently with allocations.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the heap-trim thread; freed memory is kept by the allocator");
    }
}

/// Other platforms: their allocators are left as they are.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn spawn_heap_trimmer() {}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Passwd(p)) = &args.command {
        return match passwd(p) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mqtt-server passwd: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Command::Store(StoreCommand::Inspect { path })) = &args.command {
        return match mqtt_server::store::inspect::inspect(path) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mqtt-server store inspect: {e}");
                ExitCode::from(2)
            }
        };
    }
    if args.print_default_config {
        print!("{}", config::DEFAULT_CONFIG_TOML);
        return ExitCode::SUCCESS;
    }
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mqtt-server: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log_level);
    spawn_heap_trimmer();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mqtt-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

fn load(args: &Args) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::from_toml_str(config::DEFAULT_CONFIG_TOML, "<embedded default config>")
            .map_err(|e| e.to_string())?,
    };
    if let Some(level) = &args.log_level {
        config.log_level = level.clone();
    }
    if args.port.is_some() || args.bind.is_some() {
        let first = config.listeners.first_mut().ok_or_else(|| {
            "--port/--bind need at least one listener in the configuration".to_string()
        })?;
        if let Some(bind) = &args.bind {
            first.bind = if let Ok(addr) = bind.parse::<SocketAddr>() {
                addr
            } else if let Ok(ip) = bind.parse::<IpAddr>() {
                SocketAddr::new(ip, first.bind.port())
            } else {
                return Err(format!(
                    "--bind: '{bind}' is neither an IP address nor IP:PORT"
                ));
            };
        }
        if let Some(port) = args.port {
            first.bind.set_port(port);
        }
    }
    let origin = args
        .config
        .as_ref()
        .map_or_else(|| "<command line>".to_string(), |p| p.display().to_string());
    config.validate(&origin).map_err(|e| e.to_string())?;
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.log_level) {
        return Err(format!(
            "{origin}: key 'log_level': '{}' is not a log level or filter: {e}",
            config.log_level
        ));
    }
    Ok(config)
}

/// `mqtt-server passwd`.
fn passwd(p: &PasswdArgs) -> Result<(), String> {
    use mqtt_server::auth::password_file::{Change, update};
    if p.delete {
        return update(&p.file, false, &p.user, Change::Delete);
    }
    let password = match (&p.password, p.batch) {
        (Some(password), true) => password.clone(),
        (None, true) => return Err("-b needs the password on the command line".to_owned()),
        (Some(_), false) => {
            return Err("a password on the command line needs -b (batch mode)".to_owned());
        }
        (None, false) => {
            let first = rpassword::prompt_password("Password: ")
                .map_err(|e| format!("cannot read the password: {e}"))?;
            let again = rpassword::prompt_password("Reenter password: ")
                .map_err(|e| format!("cannot read the password: {e}"))?;
            if first != again {
                return Err("passwords do not match".to_owned());
            }
            first
        }
    };
    update(&p.file, p.create, &p.user, Change::Set(&password))
}

fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info")); // `load` has validated `level` already
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(config: Config) -> ExitCode {
    // Handle SIGTERM from before the listening line is printed: a supervisor (or a test) that
    // sends it right after reading that line must get a graceful shutdown, not a kill.
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mqtt-server: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let broker = Broker::new(config);
    if let Err(e) = broker.start().await {
        eprintln!("mqtt-server: {e}");
        return ExitCode::FAILURE;
    }
    for addr in broker.local_addrs() {
        // Tests and scripts read this line to learn the port chosen for port 0.
        println!("mqtt-server listening on {addr}");
    }
    signals.wait(&broker).await;
    tracing::info!("shutting down");
    broker.shutdown().await;
    if let Some(e) = broker.store_failure() {
        eprintln!("mqtt-server: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// SIGINT and SIGTERM (stop), SIGHUP (reload the password and ACL files), installed once at
/// start-up.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// Waits for a stop signal (or the broker stopping itself, after a persistence failure),
    /// reloading `broker`'s security files on each SIGHUP.
    async fn wait(mut self, broker: &Broker) {
        let stopped = broker.shutdown_token();
        #[cfg(unix)]
        loop {
            tokio::select! {
                _ = stopped.cancelled() => return,
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => match broker.reload() {
                    Ok(()) => tracing::info!("SIGHUP: password, ACL and certificate files reloaded"),
                    Err(e) => tracing::error!("SIGHUP: reload failed, previous files stay in force: {e}"),
                },
            }
        }
        #[cfg(not(unix))]
        {
            let _ = broker;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
