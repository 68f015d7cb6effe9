//! The command line, runc-compatible: the same global flags and commands, so podman,
//! containerd and systemd units can drive this runtime as they drive runc.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "left4me-runtime",
    version,
    about = "OCI container runtime for left4me game servers"
)]
pub struct Cli {
    /// Directory for container state (tmpfs recommended); default /run/left4me-runtime,
    /// or $XDG_RUNTIME_DIR/left4me-runtime when run by another user than root.
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    /// Write the log here instead of stderr.
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[arg(long, global = true)]
    pub debug: bool,
    /// Where automatic user namespaces' UID/GID blocks are recorded (persistent storage:
    /// a container keeps its block across restarts and reboots).
    #[arg(long, global = true)]
    pub id_blocks: Option<PathBuf>,
    /// The policy for bundles written by less trusted users (root only; default
    /// /etc/left4me-runtime/policy.json when it exists).
    #[arg(long, global = true)]
    pub policy: Option<PathBuf>,
    /// Use systemd to manage cgroups (not supported: cgroupfs paths only).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The process's arguments, parsed as `Cli::parse()` does, but clap's command tree
    /// (every subcommand and argument, built to parse one line) is not dropped: the
    /// process ends soon and the kernel frees it at once. Dropping it was ~2 % of a
    /// short command's run (docs/benchmarks.md), paid by every create/start/delete.
    pub fn parse_args() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let mut command = Cli::command();
        let parsed = command
            .try_get_matches_from_mut(std::env::args_os())
            .and_then(|mut matches| {
                let cli = Cli::from_arg_matches_mut(&mut matches);
                std::mem::forget(matches);
                cli
            });
        match parsed {
            Ok(cli) => {
                std::mem::forget(command);
                cli
            }
            Err(e) => e.format(&mut command).exit(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum LayersCommand {
    /// Validate a bundle's left4me.layers and print the stack, top layer first.
    Check {
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show what a bundle asks for against the policy; non-zero exit if it is refused.
    Check {
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Run a bash script in the script sandbox to fill an overlay directory; limits
    /// default to bundles/script-sandbox/config.json (left4me's).
    Build {
        /// The script (bind-mounted read-only at /script.sh, run by /bin/bash).
        #[arg(long)]
        script: PathBuf,
        /// The overlay directory (created for --uid if missing; /overlay, the cwd).
        #[arg(long)]
        overlay: PathBuf,
        /// The sandbox's resolver configuration (/etc/resolv.conf inside).
        #[arg(long, default_value = "/etc/left4me/sandbox-resolv.conf")]
        resolv_conf: PathBuf,
        /// The build's container id (default: build-PID).
        #[arg(long)]
        id: Option<String>,
        /// The host uid and gid the script runs as.
        #[arg(long, default_value_t = 981)]
        uid: u32,
        /// Wall-time limit (e.g. 1h, 90s).
        #[arg(long)]
        timeout: Option<String>,
        /// Memory limit, no swap (e.g. 4G).
        #[arg(long)]
        memory: Option<String>,
        /// Task (process and thread) limit.
        #[arg(long)]
        tasks: Option<i64>,
        /// CPU limit in percent of one CPU (200: two CPUs' worth).
        #[arg(long)]
        cpu_percent: Option<u32>,
        /// CPUs to build on (left4me: the system cores), e.g. 0,4.
        #[arg(long)]
        cpus: Option<String>,
        /// Disk the overlay may use after the build (e.g. 20G).
        #[arg(long)]
        size_limit: Option<String>,
        /// An absolute cgroup to build in (default: beside the runtime's own group).
        #[arg(long)]
        cgroup_parent: Option<String>,
        /// Build without the limits this host's cgroup2 hierarchy cannot enforce.
        #[arg(long)]
        skip_unavailable_limits: bool,
        /// Where the build's bundle is written while it runs.
        #[arg(long, default_value = "/run/left4me-runtime-sandbox")]
        work: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// Turn a left4me instance spec (spec.yaml) into a game-server bundle.
    Init {
        name: String,
        #[arg(long)]
        spec: PathBuf,
        /// The layer store (installation/, overlays/, the system layer).
        #[arg(long)]
        store: PathBuf,
        /// Where instance bundles live.
        #[arg(long, default_value = "/var/lib/left4me/instances")]
        instances: PathBuf,
        /// The host service user the game runs as (uid = gid).
        #[arg(long, default_value_t = 980)]
        uid: u32,
        /// The store layer holding the system under the installation.
        #[arg(long, default_value = "base")]
        system: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    pub id: String,
    /// A JSON file with OCI `linux.resources` ("-" for stdin); flags override it.
    #[arg(long, short)]
    pub resources: Option<PathBuf>,
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    #[arg(long)]
    pub cpu_period: Option<u64>,
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Memory limit in bytes (-1: unlimited).
    #[arg(long, allow_negative_numbers = true)]
    pub memory: Option<i64>,
    #[arg(long, allow_negative_numbers = true)]
    pub memory_reservation: Option<i64>,
    /// Memory plus swap, in bytes (-1: unlimited).
    #[arg(long, allow_negative_numbers = true)]
    pub memory_swap: Option<i64>,
    #[arg(long, allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    #[arg(long)]
    pub blkio_weight: Option<u16>,
}

#[derive(Debug, Subcommand)]
pub enum UsernsCommand {
    /// Print the allocated UID/GID blocks (container id, first host id).
    List {
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Free a container's block (its upper layer's ownership then means nothing).
    Release { id: String },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Automatic user namespaces (left4me.userns): UID/GID blocks.
    #[command(subcommand)]
    Userns(UsernsCommand),
    /// Change the cgroup limits of a container (runc's flags, or --resources FILE).
    Update(UpdateArgs),
    /// Freeze every process of a running container (cgroup.freeze).
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// left4me game-server instances.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// The trust boundary: check bundles against the policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// left4me's script sandbox: build an overlay from a user's bash script.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Edit a bundle's config.json (validated, atomic, unknown fields and key order kept).
    Config(crate::edit::cli::ConfigArgs),
    /// The CPU topology and which pinned container (org.left4me.cpuset=auto) sits where.
    Cpus {
        #[arg(long, short, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Stream a container's events as JSON lines (stats every interval, oom at once).
    Events {
        /// Print one stats event and exit.
        #[arg(long)]
        stats: bool,
        /// Time between stats events (e.g. 5s, 250ms).
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// The layered root filesystem (left4me.layers).
    #[command(subcommand)]
    Layers(LayersCommand),
    /// Write a default config.json (runc's defaults).
    Spec {
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        rootless: bool,
    },
    /// Set a container up; its process waits for `start`.
    Create {
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(long)]
        no_pivot: bool,
        #[arg(long, default_value_t = 0)]
        preserve_fds: u32,
        #[arg(long, hide = true)]
        no_new_keyring: bool,
        id: String,
    },
    /// Let a created container exec its process.
    Start { id: String },
    /// Create and start; in the foreground, wait and exit with the container's status.
    Run {
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
        #[arg(long, short)]
        detach: bool,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(long)]
        no_pivot: bool,
        #[arg(long, default_value_t = 0)]
        preserve_fds: u32,
        #[arg(long, hide = true)]
        no_new_keyring: bool,
        /// Keep the container after it exits (default: delete it).
        #[arg(long)]
        keep: bool,
        /// Wall-time limit in the foreground (e.g. 1h, 90s): then the whole container is
        /// killed and the runtime says so.
        #[arg(long)]
        timeout: Option<String>,
        id: String,
    },
    /// Print the OCI state of a container.
    State { id: String },
    /// Send a signal (name or number, default SIGTERM) to the container's process.
    Kill {
        #[arg(long, short)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Remove a container (with --force, kill it first; absent ids succeed).
    Delete {
        #[arg(long, short)]
        force: bool,
        id: String,
    },
    /// List containers.
    List {
        #[arg(long, short, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        #[arg(long, short)]
        quiet: bool,
    },
    /// List the container's processes.
    Ps {
        #[arg(long, short, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        id: String,
    },
    /// Run a new process in a container.
    Exec {
        #[arg(long, short)]
        tty: bool,
        #[arg(long, short)]
        detach: bool,
        #[arg(long, short)]
        process: Option<PathBuf>,
        #[arg(long, short)]
        env: Vec<String>,
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// UID[:GID]
        #[arg(long, short)]
        user: Option<String>,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        preserve_fds: u32,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Print the OCI features document.
    Features,
}

impl Command {
    /// The container id the command is about, for error messages.
    pub fn container_id(&self) -> Option<&str> {
        match self {
            Command::Create { id, .. }
            | Command::Start { id }
            | Command::Run { id, .. }
            | Command::State { id }
            | Command::Kill { id, .. }
            | Command::Delete { id, .. }
            | Command::Ps { id, .. }
            | Command::Exec { id, .. }
            | Command::Update(UpdateArgs { id, .. })
            | Command::Pause { id }
            | Command::Resume { id }
            | Command::Events { id, .. } => Some(id),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::Spec { .. } => "spec",
            Command::Create { .. } => "create",
            Command::Start { .. } => "start",
            Command::Run { .. } => "run",
            Command::State { .. } => "state",
            Command::Kill { .. } => "kill",
            Command::Delete { .. } => "delete",
            Command::List { .. } => "list",
            Command::Ps { .. } => "ps",
            Command::Exec { .. } => "exec",
            Command::Features => "features",
            Command::Pause { .. } => "pause",
            Command::Update(_) => "update",
            Command::Resume { .. } => "resume",
            Command::Events { .. } => "events",
            Command::Cpus { .. } => "cpus",
            Command::Config(_) => "config",
            Command::Instance(_) => "instance init",
            Command::Sandbox(_) => "sandbox build",
            Command::Policy(_) => "policy check",
            Command::Layers(LayersCommand::Check { .. }) => "layers check",
            Command::Userns(UsernsCommand::List { .. }) => "userns list",
            Command::Userns(UsernsCommand::Release { .. }) => "userns release",
        }
    }

    /// Commands that create containers from bundles, under the policy.
    pub fn needs_policy(&self) -> bool {
        matches!(
            self,
            Command::Create { .. } | Command::Run { .. } | Command::Sandbox(_) | Command::Policy(_)
        )
    }

    /// Commands that put a process into a running container and so always run from a
    /// protected copy of the binary (create and run decide per bundle: see exe_guard).
    pub fn joins_container(&self) -> bool {
        matches!(self, Command::Exec { .. })
    }
}
