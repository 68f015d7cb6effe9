//! `left4me-runtime`: parse the command line, run one command, print one clear line on
//! failure (`left4me-runtime: container ID: COMMAND: CAUSE`) and exit non-zero.

use std::process::ExitCode;

use left4me_runtime::cli::{
    self as cli, Cli, Command, LayersCommand, ListFormat, LogFormat, UsernsCommand,
};
use left4me_runtime::container::{create, events, exec, info, lifecycle, run, supervise, Paths};
use left4me_runtime::error::{Error, Result};
use left4me_runtime::idblocks::{self, Allocator};
use left4me_runtime::{exe_guard, log, rootless};

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    let format = match cli.log_format {
        LogFormat::Text => log::Format::Text,
        LogFormat::Json => log::Format::Json,
    };
    if let Err(e) = log::init(cli.log.as_deref(), format, cli.debug) {
        eprintln!("left4me-runtime: opening --log: {e}");
        return ExitCode::from(1);
    }
    match dispatch(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let subject = match cli.command.container_id() {
                // An absurd id is not repeated in full.
                Some(id) if id.len() > 80 => {
                    format!("container {}...: ", id.chars().take(64).collect::<String>())
                }
                Some(id) => format!("container {id}: "),
                None => String::new(),
            };
            let line = format!("{subject}{}: {e}", cli.command.name());
            if log::has_file() {
                log::error(&line);
            }
            eprintln!("left4me-runtime: {line}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: &Cli) -> Result<u8> {
    if cli.systemd_cgroup && matches!(cli.command, Command::Create { .. } | Command::Run { .. }) {
        return Err(Error::Unsupported(
            "--systemd-cgroup is not supported: this runtime manages cgroupfs paths itself".into(),
        ));
    }
    // create/run decide once the bundle is loaded (exe_guard::needed_for, in create).
    if cli.command.joins_container() {
        exe_guard::ensure_protected()?;
    }
    // After the re-exec above: loaded (and announced) once.
    let (policy, policy_notice) = if cli.command.needs_policy() {
        load_policy(cli)?
    } else {
        (None, None)
    };
    let paths = Paths {
        root: match &cli.root {
            Some(root) => root.clone(),
            None => rootless::default_root()?,
        },
        id_blocks: match &cli.id_blocks {
            Some(file) => file.clone(),
            None => rootless::default_id_blocks(),
        },
        policy,
        policy_notice,
    };
    match &cli.command {
        Command::Spec { bundle, rootless } => info::write_spec(bundle, *rootless)?,
        Command::Create {
            bundle,
            pid_file,
            console_socket,
            no_pivot,
            preserve_fds,
            ..
        } => {
            let opts = create::CreateOptions {
                bundle: bundle.clone(),
                pid_file: pid_file.clone(),
                console_socket: console_socket.clone(),
                no_pivot: *no_pivot,
                preserve_fds: *preserve_fds,
                own_console: false,
                notify_relay: false,
            };
            create::create(
                &paths,
                cli.command.container_id().unwrap_or_default(),
                &opts,
            )?;
        }
        Command::Start { id } => lifecycle::start(&paths, id)?,
        Command::Pause { id } => lifecycle::pause(&paths, id)?,
        Command::Update(args) => lifecycle::update(&paths, &args.id, &update_changes(args)?)?,
        Command::Resume { id } => lifecycle::resume(&paths, id)?,
        Command::Cpus { format } => print_cpus(&paths, *format)?,
        Command::Instance(cli::InstanceCommand::Init {
            name,
            spec,
            store,
            instances,
            uid,
            system,
        }) => {
            let dir = left4me_runtime::instance::init(&left4me_runtime::instance::InitOptions {
                name: name.clone(),
                spec: spec.clone(),
                store: store.clone(),
                instances: instances.clone(),
                uid: *uid,
                system: Some(system.clone()).filter(|s| !s.is_empty()),
            })?;
            println!("{}", dir.display());
        }
        Command::Policy(cli::PolicyCommand::Check { bundle }) => {
            let report = left4me_runtime::policy::report(paths.policy.as_deref(), bundle)?;
            print!("{}", report.text);
            return Ok(u8::from(!report.allowed));
        }
        Command::Sandbox(cli::SandboxCommand::Build {
            script,
            overlay,
            resolv_conf,
            id,
            uid,
            timeout,
            memory,
            tasks,
            cpu_percent,
            cpus,
            size_limit,
            cgroup_parent,
            skip_unavailable_limits,
            work,
        }) => {
            use left4me_runtime::sandbox::{self, parse_size};
            let opts = sandbox::BuildOptions {
                id: id
                    .clone()
                    .unwrap_or_else(|| format!("build-{}", std::process::id())),
                script: script.clone(),
                overlay: overlay.clone(),
                resolv_conf: resolv_conf.clone(),
                uid: *uid,
                work: work.clone(),
                timeout: timeout
                    .as_deref()
                    .map(|t| events::parse_duration("--timeout", t))
                    .transpose()?,
                memory: memory
                    .as_deref()
                    .map(|m| parse_size("--memory", m))
                    .transpose()?,
                tasks: *tasks,
                cpu_percent: *cpu_percent,
                cpus: cpus.clone(),
                size_limit: size_limit
                    .as_deref()
                    .map(|s| parse_size("--size-limit", s))
                    .transpose()?,
                cgroup_parent: cgroup_parent.clone(),
                skip_unavailable_limits: *skip_unavailable_limits,
            };
            return sandbox::build(&paths, &opts);
        }
        Command::Config(args) => {
            if let Some(text) = left4me_runtime::edit::cli::run(args)? {
                print!("{}", text.trim_end_matches('\n'));
                println!();
            }
        }
        Command::Events {
            stats,
            interval,
            id,
        } => {
            let mut out = std::io::stdout().lock();
            if *stats {
                events::stats_once(&paths, id, &mut out)?
            } else {
                events::stream(
                    &paths,
                    id,
                    events::parse_duration("--interval", interval)?,
                    &mut out,
                )?
            }
        }
        Command::Run {
            bundle,
            detach,
            pid_file,
            console_socket,
            no_pivot,
            preserve_fds,
            keep,
            timeout,
            id,
            ..
        } => {
            let limit = timeout
                .as_deref()
                .map(|t| events::parse_duration("--timeout", t))
                .transpose()?;
            if limit.is_some() && *detach {
                return Err(Error::Usage(
                    "--timeout needs the foreground (not --detach)".into(),
                ));
            }
            let opts = create::CreateOptions {
                bundle: bundle.clone(),
                pid_file: pid_file.clone(),
                console_socket: console_socket.clone(),
                no_pivot: *no_pivot,
                preserve_fds: *preserve_fds,
                own_console: !*detach && console_socket.is_none(),
                notify_relay: !*detach,
            };
            return run_command(&paths, id, &opts, *detach, *keep, limit);
        }
        Command::State { id } => {
            let v = info::state_json(&paths, id)?;
            println!("{}", serde_json::to_string_pretty(&v).expect("JSON value"));
        }
        Command::Kill { id, signal, all } => {
            lifecycle::kill(&paths, id, lifecycle::parse_signal(signal)?, *all)?
        }
        Command::Delete { id, force } => lifecycle::delete(&paths, id, *force)?,
        Command::List { format, quiet } => {
            let items = info::list(&paths)?;
            match (format, quiet) {
                (_, true) => items
                    .iter()
                    .for_each(|v| println!("{}", v["id"].as_str().unwrap_or(""))),
                (ListFormat::Json, _) => println!("{}", serde_json::Value::from(items)),
                (ListFormat::Table, _) => print!("{}", info::list_table(&items)),
            }
        }
        Command::Ps { format, id } => {
            let pids = info::pids(&paths, id)?;
            match format {
                ListFormat::Json => println!(
                    "{}",
                    serde_json::json!(pids.iter().map(|p| p.as_raw()).collect::<Vec<_>>())
                ),
                ListFormat::Table => print!("{}", info::ps_table(&pids)),
            }
        }
        Command::Exec {
            tty,
            detach,
            process,
            env,
            cwd,
            user,
            pid_file,
            console_socket,
            preserve_fds,
            id,
            command,
        } => {
            let opts = exec::ExecOptions {
                process_file: process.clone(),
                args: command.clone(),
                env: env.clone(),
                cwd: cwd.clone(),
                user: user.as_deref().map(parse_user).transpose()?,
                tty: *tty,
                console_socket: console_socket.clone(),
                pid_file: pid_file.clone(),
                preserve_fds: *preserve_fds,
                detach: *detach,
            };
            let signals = if *detach {
                None
            } else {
                Some(supervise::block_signals()?)
            };
            let (pid, console) = exec::exec(&paths, id, &opts)?;
            if let Some(signals) = signals {
                return Ok(
                    supervise::supervise(&signals, pid, console, None, false, None)?.code as u8,
                );
            }
        }
        Command::Layers(LayersCommand::Check { bundle, format }) => {
            let report = left4me_runtime::layers::report::check(bundle)?;
            match format {
                ListFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("JSON value")
                ),
                ListFormat::Table => print!("{}", report.table()),
            }
        }
        Command::Userns(UsernsCommand::List { format }) => {
            let blocks = Allocator::new(&paths.id_blocks).list()?;
            match format {
                ListFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&blocks).expect("JSON value")
                ),
                ListFormat::Table => {
                    println!("{:<32} {:>12} {:>8}", "ID", "HOST START", "SIZE");
                    for (id, start) in blocks {
                        println!("{id:<32} {start:>12} {:>8}", idblocks::BLOCK_SIZE);
                    }
                }
            }
        }
        Command::Userns(UsernsCommand::Release { id }) => {
            if !Allocator::new(&paths.id_blocks).release(id)? {
                log::warn(&format!("userns release: {id} had no block"));
            }
        }
        Command::Features => println!(
            "{}",
            serde_json::to_string_pretty(&info::features()).expect("JSON value")
        ),
    }
    Ok(0)
}

/// `run`: create + start; in the foreground, supervise, then delete.
fn run_command(
    paths: &Paths,
    id: &str,
    opts: &create::CreateOptions,
    detach: bool,
    keep: bool,
    limit: Option<std::time::Duration>,
) -> Result<u8> {
    if detach {
        create::create(paths, id, opts)?;
        if let Err(e) = lifecycle::start(paths, id) {
            let _ = lifecycle::delete(paths, id, true);
            return Err(e);
        }
        return Ok(0);
    }
    Ok(run::foreground(paths, id, opts, keep, limit, false)?.code as u8)
}

/// The policy in force: `--policy FILE` (root only), else the default file if present.
type LoadedPolicy = (
    Option<std::sync::Arc<left4me_runtime::policy::Policy>>,
    Option<String>,
);

fn load_policy(cli: &Cli) -> Result<LoadedPolicy> {
    use left4me_runtime::policy;
    if cli.policy.is_some() && !nix::unistd::getuid().is_root() {
        return Err(Error::Usage(
            "--policy is for root: a policy must not be chosen by the user it constrains".into(),
        ));
    }
    let (path, explicit) = match &cli.policy {
        Some(p) => (p.clone(), true),
        None => (std::path::PathBuf::from(policy::DEFAULT_FILE), false),
    };
    let loaded = policy::load(&path, explicit)?;
    // A policy guards root; rootless containers get nothing a policy would refuse them.
    let announce =
        !left4me_runtime::rootless::active() && matches!(cli.command, Command::Run { .. });
    let notice = (loaded.is_none() && announce).then(|| {
        format!(
            "no policy in force ({} does not exist): bundles are trusted as runc trusts them",
            path.display()
        )
    });
    Ok((loaded.map(std::sync::Arc::new), notice))
}

/// `update`'s flags (over `--resources`) as an OCI `linux.resources` object.
fn update_changes(args: &cli::UpdateArgs) -> Result<serde_json::Value> {
    use serde_json::{json, Value};
    let mut v = match &args.resources {
        None => json!({}),
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| Error::io("stdin", e))?
            } else {
                std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?
            };
            serde_json::from_str(&text)
                .map_err(|e| Error::config(format!("--resources {}", path.display()), e))?
        }
    };
    let mut set = |section: &str, key: &str, value: Option<Value>| {
        if let Some(value) = value {
            v[section][key] = value;
        }
    };
    set("cpu", "shares", args.cpu_shares.map(Value::from));
    set("cpu", "quota", args.cpu_quota.map(Value::from));
    set("cpu", "period", args.cpu_period.map(Value::from));
    set("cpu", "cpus", args.cpuset_cpus.clone().map(Value::from));
    set("cpu", "mems", args.cpuset_mems.clone().map(Value::from));
    set("memory", "limit", args.memory.map(Value::from));
    set(
        "memory",
        "reservation",
        args.memory_reservation.map(Value::from),
    );
    set("memory", "swap", args.memory_swap.map(Value::from));
    set("pids", "limit", args.pids_limit.map(Value::from));
    set("blockIO", "weight", args.blkio_weight.map(Value::from));
    Ok(v)
}

fn parse_user(text: &str) -> Result<(u32, u32)> {
    let bad = || Error::Usage(format!("--user {text:?}: expected UID[:GID] (numbers)"));
    let (u, g) = text.split_once(':').unwrap_or((text, "0"));
    Ok((u.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?))
}

/// `cpus`: the CPUs containers may be pinned to (the cgroup2 root's effective cpuset, or
/// every online CPU), their cores, and the pinned containers.
fn print_cpus(paths: &Paths, format: ListFormat) -> Result<()> {
    use left4me_runtime::cgroups::{self, pinning};
    let list = cgroups::hierarchy()
        .and_then(|h| std::fs::read_to_string(h.join("cpuset.cpus.effective")).ok())
        .or_else(|| std::fs::read_to_string("/sys/devices/system/cpu/online").ok())
        .unwrap_or_default();
    let allowed = left4me_runtime::process::parse_cpu_list(list.trim())
        .map_err(|m| Error::Unsupported(format!("the host's CPU list: {m}")))?;
    let topo = pinning::Topology::read(std::path::Path::new(pinning::SYSFS_CPU), &allowed);
    let pins = pinning::Pins::new(&paths.root).list()?;
    match format {
        ListFormat::Table => print!("{}", pinning::report(&allowed, &topo, &pins)),
        ListFormat::Json => {
            let cpus: Vec<serde_json::Value> = allowed
                .iter()
                .map(|cpu| {
                    serde_json::json!({
                        "cpu": cpu,
                        "core": topo.siblings.get(cpu),
                        "containers": pins.iter().filter(|(_, c)| *c == cpu).map(|(id, _)| id).collect::<Vec<_>>(),
                    })
                })
                .collect();
            println!("{}", serde_json::Value::from(cpus));
        }
    }
    Ok(())
}
