//! The `config` command line and its dispatch.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{append, apply, env_set, env_unset, remove_at, set, unset, value, Target};
use crate::error::{Error, IoContext, Result};

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The bundle whose config.json to edit (checked against its rootfs and layers).
    #[arg(long, short, conflicts_with = "file")]
    pub bundle: Option<PathBuf>,
    /// A config.json file to edit instead; `-` reads stdin and writes stdout.
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// Print the result instead of writing it.
    #[arg(long)]
    pub dry_run: bool,
    #[command(subcommand)]
    pub op: ConfigOp,
}

#[derive(Debug, Subcommand)]
pub enum ConfigOp {
    /// Print the value at PATH (e.g. process.args, mounts[2].options).
    Get { path: String },
    /// Set PATH to VALUE (JSON; with --string, plain text).
    Set {
        path: String,
        value: String,
        #[arg(long)]
        string: bool,
    },
    /// Remove the value at PATH.
    Unset { path: String },
    /// Append VALUE to the array at PATH.
    Append {
        path: String,
        value: String,
        #[arg(long)]
        string: bool,
    },
    /// Remove element INDEX of the array at PATH.
    Remove { path: String, index: usize },
    /// Check the whole config; every problem is printed as `path: reason`.
    Validate,
    /// process.env: `env set K=V`, `env unset K`.
    Env {
        #[arg(value_parser = ["set", "unset"])]
        action: String,
        item: String,
    },
    /// annotations: `annotation set K V`, `annotation unset K`.
    Annotation {
        #[arg(value_parser = ["set", "unset"])]
        action: String,
        key: String,
        value: Option<String>,
    },
    /// linux.seccomp from a shipped profile (srcds, sandbox, default) or a JSON file.
    Seccomp {
        #[arg(long)]
        profile: String,
    },
    /// linux.resources shortcuts.
    Resources {
        /// cpuset, e.g. 0-3
        #[arg(long)]
        cpus: Option<String>,
        /// memory limit in bytes (-1: none)
        #[arg(long)]
        memory: Option<i64>,
        /// pids limit (0 or -1: none)
        #[arg(long)]
        pids: Option<i64>,
    },
    /// mounts: `mount add --source S --destination D [--type T] [--options a,b]`,
    /// `mount remove --destination D`.
    Mount {
        #[arg(value_parser = ["add", "remove"])]
        action: String,
        #[arg(long)]
        destination: String,
        #[arg(long)]
        source: Option<String>,
        #[arg(long, name = "type", default_value = "bind")]
        kind: String,
        #[arg(long, value_delimiter = ',')]
        options: Vec<String>,
    },
    /// left4me.layers: `layer add PATH [--position N]` (0 = top), `layer remove PATH`,
    /// `layer move PATH --position N`, `layer store DIR`.
    Layer {
        #[arg(value_parser = ["add", "remove", "move", "store"])]
        action: String,
        path: String,
        #[arg(long)]
        position: Option<usize>,
    },
    /// User namespace mappings: `userns --uid C:H:N [--uid ...] --gid C:H:N [...]`
    /// (adds a user namespace if the config has none).
    Userns {
        #[arg(long, required = true)]
        uid: Vec<String>,
        #[arg(long, required = true)]
        gid: Vec<String>,
    },
    /// hooks: `hook add --stage S --path P [--arg A]... [--env K=V]... [--timeout N]`,
    /// `hook remove --stage S --path P`.
    Hook {
        #[arg(value_parser = ["add", "remove"])]
        action: String,
        #[arg(long, value_parser = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"])]
        stage: String,
        #[arg(long)]
        path: String,
        #[arg(long = "arg", allow_hyphen_values = true)]
        args: Vec<String>,
        #[arg(long)]
        env: Vec<String>,
        #[arg(long)]
        timeout: Option<i64>,
    },
}

fn target(args: &ConfigArgs) -> Target {
    match (&args.bundle, &args.file) {
        (_, Some(f)) if f.as_os_str() == "-" => Target::Stdio,
        (_, Some(f)) => Target::File(f.clone()),
        (Some(b), None) => Target::Bundle(b.clone()),
        (None, None) => Target::Bundle(PathBuf::from(".")),
    }
}

fn remove_matching(
    doc: &mut Value,
    pointer: &str,
    what: &str,
    keep: impl Fn(&Value) -> bool,
) -> Result<()> {
    let arr = doc
        .pointer_mut(pointer)
        .and_then(Value::as_array_mut)
        .ok_or_else(|| Error::Usage(format!("{what}: none configured")))?;
    let before = arr.len();
    arr.retain(keep);
    if arr.len() == before {
        return Err(Error::Usage(format!("{what}: not found")));
    }
    Ok(())
}

/// Runs the command; returns what to print.
pub fn run(args: &ConfigArgs) -> Result<Option<String>> {
    let t = target(args);
    let dry = args.dry_run;
    match &args.op {
        ConfigOp::Get { path } => super::get(&t, path).map(Some),
        ConfigOp::Validate => {
            let text = match &t {
                Target::Stdio => {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                        .at("standard input")?;
                    s
                }
                other => {
                    let f = other.file().expect("a file target");
                    std::fs::read_to_string(&f).at(&f)?
                }
            };
            let doc: Value = serde_json::from_str(&text).map_err(|e| Error::config("(json)", e))?;
            let bundle = match &t {
                Target::Bundle(d) => Some(d.as_path()),
                _ => None,
            };
            let problems = super::problems(&doc, bundle);
            if problems.is_empty() {
                return Ok(None);
            }
            // Every problem on stdout, one per line; the error itself stays one line.
            for p in &problems {
                println!("{p}");
            }
            Err(Error::Usage(format!("{} problem(s) found", problems.len())))
        }
        ConfigOp::Set {
            path,
            value: v,
            string,
        } => {
            let v = value(v, *string)?;
            apply(&t, dry, |d| set(d, path, v))
        }
        ConfigOp::Unset { path } => apply(&t, dry, |d| unset(d, path)),
        ConfigOp::Append {
            path,
            value: v,
            string,
        } => {
            let v = value(v, *string)?;
            apply(&t, dry, |d| append(d, path, v))
        }
        ConfigOp::Remove { path, index } => apply(&t, dry, |d| remove_at(d, path, *index)),
        ConfigOp::Env { action, item } => apply(&t, dry, |d| match action.as_str() {
            "set" => env_set(d, item),
            _ => env_unset(d, item),
        }),
        ConfigOp::Annotation {
            action,
            key,
            value: v,
        } => apply(&t, dry, |d| {
            let path = format!(
                "annotations[{}]",
                serde_json::to_string(key).expect("a string")
            );
            match (action.as_str(), v) {
                ("set", Some(v)) => set(d, &path, Value::String(v.clone())),
                ("set", None) => Err(Error::Usage("annotation set KEY VALUE".into())),
                _ => unset(d, &path),
            }
        }),
        ConfigOp::Seccomp { profile } => {
            let text = match crate::seccomp::profiles::named(profile) {
                Some(p) => p.to_string(),
                None => std::fs::read_to_string(profile).at(profile)?,
            };
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| Error::config(format!("{profile}: (json)"), e))?;
            apply(&t, dry, |d| set(d, "linux.seccomp", v))
        }
        ConfigOp::Resources { cpus, memory, pids } => apply(&t, dry, |d| {
            if let Some(c) = cpus {
                set(d, "linux.resources.cpu.cpus", json!(c))?;
            }
            if let Some(m) = memory {
                set(d, "linux.resources.memory.limit", json!(m))?;
            }
            if let Some(p) = pids {
                set(d, "linux.resources.pids.limit", json!(p))?;
            }
            Ok(())
        }),
        ConfigOp::Mount {
            action,
            destination,
            source,
            kind,
            options,
        } => apply(&t, dry, |d| {
            if action == "remove" {
                return remove_matching(d, "/mounts", &format!("mount {destination}"), |m| {
                    m["destination"] != json!(destination)
                });
            }
            let source = source
                .as_ref()
                .ok_or_else(|| Error::Usage("mount add needs --source".into()))?;
            let mut options = options.clone();
            if kind == "bind" && !options.iter().any(|o| o == "bind" || o == "rbind") {
                options.insert(0, "rbind".into());
            }
            append(
                d,
                "mounts",
                json!({"destination": destination, "type": kind, "source": source, "options": options}),
            )
        }),
        ConfigOp::Layer {
            action,
            path,
            position,
        } => apply(&t, dry, |d| layer(d, action, path, *position)),
        ConfigOp::Userns { uid, gid } => {
            let parse = |list: &[String]| -> Result<Value> {
                list.iter()
                    .map(|m| {
                        let parts: Vec<u32> = m
                            .split(':')
                            .map(|n| n.parse::<u32>())
                            .collect::<std::result::Result<_, _>>()
                            .map_err(|_| {
                                Error::Usage(format!("{m:?}: expected CONTAINER:HOST:SIZE"))
                            })?;
                        match parts[..] {
                            [c, h, n] => Ok(json!({"containerID": c, "hostID": h, "size": n})),
                            _ => Err(Error::Usage(format!("{m:?}: expected CONTAINER:HOST:SIZE"))),
                        }
                    })
                    .collect::<Result<Vec<Value>>>()
                    .map(Value::Array)
            };
            let (uids, gids) = (parse(uid)?, parse(gid)?);
            apply(&t, dry, |d| {
                set(d, "linux.uidMappings", uids)?;
                set(d, "linux.gidMappings", gids)?;
                let has_user = d
                    .pointer("/linux/namespaces")
                    .and_then(Value::as_array)
                    .is_some_and(|n| n.iter().any(|x| x["type"] == "user"));
                if !has_user {
                    append(d, "linux.namespaces", json!({"type": "user"}))?;
                }
                Ok(())
            })
        }
        ConfigOp::Hook {
            action,
            stage,
            path,
            args: hook_args,
            env,
            timeout,
        } => apply(&t, dry, |d| {
            let pointer = format!("/hooks/{stage}");
            if action == "remove" {
                return remove_matching(d, &pointer, &format!("{stage} hook {path}"), |h| {
                    h["path"] != json!(path)
                });
            }
            let mut hook = json!({"path": path});
            if !hook_args.is_empty() {
                hook["args"] = json!(hook_args);
            }
            if !env.is_empty() {
                hook["env"] = json!(env);
            }
            if let Some(t) = timeout {
                hook["timeout"] = json!(t);
            }
            append(d, &format!("hooks.{stage}"), hook)
        }),
    }
}

/// The `layer` helper on `left4me.layers` (lower[0] is the top layer).
fn layer(d: &mut Value, action: &str, path: &str, position: Option<usize>) -> Result<()> {
    if action == "store" {
        return set(d, "left4me.layers.store", json!(path));
    }
    let found = d
        .pointer("/left4me/layers/lower")
        .and_then(Value::as_array)
        .and_then(|l| l.iter().position(|x| x["path"] == json!(path)));
    match (action, found) {
        ("add", Some(_)) => Err(Error::Usage(format!("layer {path}: already in the stack"))),
        ("add", None) => {
            append(d, "left4me.layers.lower", json!({"path": path}))?;
            let lower = d
                .pointer_mut("/left4me/layers/lower")
                .and_then(Value::as_array_mut)
                .expect("just appended");
            let item = lower.pop().expect("just appended");
            let at = position.unwrap_or(0).min(lower.len());
            lower.insert(at, item);
            Ok(())
        }
        (_, None) => Err(Error::Usage(format!("layer {path}: not in the stack"))),
        ("remove", Some(i)) => remove_at(d, "left4me.layers.lower", i),
        (_, Some(i)) => {
            let to = position.ok_or_else(|| Error::Usage("layer move needs --position".into()))?;
            let lower = d
                .pointer_mut("/left4me/layers/lower")
                .and_then(Value::as_array_mut)
                .expect("found above");
            let item = lower.remove(i);
            let at = to.min(lower.len());
            lower.insert(at, item);
            Ok(())
        }
    }
}
