//! `left4me-runtime config`: edits a bundle's config.json in place. The document is
//! kept as parsed JSON with its key order (serde_json's `preserve_order`), so fields the
//! runtime does not know survive and an edit changes only the edited value. Every edit
//! is validated (OCI types through oci-spec, plus the runtime's own checks) before it is
//! written; writes are temp file + rename under a lock, so readers never see a torn file
//! and concurrent edits do not lose each other's changes.

pub mod cli;
pub mod path;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, IoContext, Result};
use crate::table::LockedTable;

/// Where the document comes from and goes to.
#[derive(Debug, Clone)]
pub enum Target {
    /// `--bundle DIR`: DIR/config.json, validated against the bundle (rootfs, layers).
    Bundle(PathBuf),
    /// `--file F`: a config.json outside a bundle (checked as a document only).
    File(PathBuf),
    /// `--file -`: stdin to stdout.
    Stdio,
}

impl Target {
    fn file(&self) -> Option<PathBuf> {
        match self {
            Target::Bundle(dir) => Some(dir.join(crate::spec::CONFIG_FILE)),
            Target::File(f) => Some(f.clone()),
            Target::Stdio => None,
        }
    }

    fn read(&self) -> Result<String> {
        match self.file() {
            Some(f) => std::fs::read_to_string(&f).at(&f),
            None => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .at("standard input")?;
                Ok(text)
            }
        }
    }
}

/// Every problem of a document, as `path: reason` lines (empty when it is valid).
pub fn problems(doc: &Value, bundle: Option<&Path>) -> Vec<String> {
    let mut out = Vec::new();
    let spec = match crate::spec::parse_value(doc.clone()) {
        Ok(spec) => spec,
        Err(e) => return vec![e.to_string()],
    };
    let mut check = |r: Result<()>| {
        if let Err(e) = r {
            out.push(e.to_string());
        }
    };
    if let Some(linux) = spec.linux() {
        if let Some(r) = linux.resources() {
            check(crate::cgroups::resources::settings(r).map(drop));
            check(
                crate::cgroups::devices::rules(r.devices().as_deref(), linux.devices().as_deref())
                    .map(drop),
            );
        }
        if let Some(s) = linux.seccomp() {
            check(crate::seccomp::Filter::compile(s).map(drop));
        }
    }
    check(crate::cgroups::pinning::wanted(&spec).map(drop));
    check(crate::cgroups::netdeny::wanted(&spec).map(drop));
    check(crate::layers::LayersConfig::from_config(doc).map(drop));
    check(crate::idblocks::AutoUserns::from_config(doc).map(drop));
    if let Some(dir) = bundle {
        match std::fs::canonicalize(dir).at(dir) {
            Ok(dir) => match crate::spec::Bundle::from_value(dir.clone(), doc.clone()) {
                Ok(b) => {
                    if let Some(layers) = &b.layers {
                        check(crate::layers::resolve(layers, &b.dir).map(drop));
                    }
                }
                Err(e) => out.push(e.to_string()),
            },
            Err(e) => out.push(e.to_string()),
        }
    }
    out.dedup();
    out
}

/// The indentation the document was written with (tabs for runc's, spaces otherwise).
fn indentation(text: &str) -> Vec<u8> {
    text.lines()
        .nth(1)
        .map(|l| {
            l.chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .map(|c| c as u8)
                .collect::<Vec<u8>>()
        })
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| b"  ".to_vec())
}

fn render(doc: &Value, indent: &[u8]) -> String {
    use serde::Serialize;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(indent);
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    doc.serialize(&mut ser).expect("a JSON value serializes");
    buf.push(b'\n');
    String::from_utf8(buf).expect("JSON is UTF-8")
}

/// Reads the document, applies `edit`, validates the result and writes it (or, with
/// `dry_run`, returns it). An edit that leaves an invalid document changes nothing.
pub fn apply(
    target: &Target,
    dry_run: bool,
    edit: impl FnOnce(&mut Value) -> Result<()>,
) -> Result<Option<String>> {
    let lock = target
        .file()
        .map(|f| LockedTable::new(f.with_file_name(".config.json.edit")));
    let _guard = lock.as_ref().map(LockedTable::lock).transpose()?;
    let text = target.read()?;
    let mut doc: Value = serde_json::from_str(&text).map_err(|e| Error::config("(json)", e))?;
    edit(&mut doc)?;
    let bundle = match target {
        Target::Bundle(dir) => Some(dir.as_path()),
        _ => None,
    };
    let problems = problems(&doc, bundle);
    if !problems.is_empty() {
        return Err(Error::Usage(format!(
            "the edit would make the config invalid, nothing was changed: {}",
            problems.join("; ")
        )));
    }
    let out = render(&doc, &indentation(&text));
    match target.file() {
        Some(f) if !dry_run => {
            let mode = std::fs::metadata(&f)
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
                .unwrap_or(0o644);
            crate::state::write_atomic(&f, out.as_bytes(), mode)?;
            Ok(None)
        }
        _ => Ok(Some(out)),
    }
}

/// `get PATH`: the value, as JSON.
pub fn get(target: &Target, path_text: &str) -> Result<String> {
    let doc: Value =
        serde_json::from_str(&target.read()?).map_err(|e| Error::config("(json)", e))?;
    let segs = path::parse(path_text)?;
    let value =
        path::get(&doc, &segs).ok_or_else(|| Error::Usage(format!("{path_text}: not set")))?;
    Ok(serde_json::to_string_pretty(value).expect("a JSON value serializes"))
}

/// Parses a command-line value: JSON, or with `string` plain text.
pub fn value(text: &str, string: bool) -> Result<Value> {
    if string {
        return Ok(Value::String(text.to_string()));
    }
    serde_json::from_str(text).map_err(|e| {
        Error::Usage(format!(
            "{text:?} is not JSON ({e}); quote text as '\"text\"' or use --string"
        ))
    })
}

/// `set PATH VALUE`.
pub fn set(doc: &mut Value, path_text: &str, v: Value) -> Result<()> {
    let segs = path::parse(path_text)?;
    *path::get_mut_or_create(doc, &segs, path_text)? = v;
    Ok(())
}

/// `unset PATH` (an absent value is an error, so typos do not pass silently).
pub fn unset(doc: &mut Value, path_text: &str) -> Result<()> {
    if path::remove(doc, &path::parse(path_text)?) {
        Ok(())
    } else {
        Err(Error::Usage(format!("{path_text}: not set")))
    }
}

/// `append PATH VALUE`: to an array (created if absent).
pub fn append(doc: &mut Value, path_text: &str, v: Value) -> Result<()> {
    let segs = path::parse(path_text)?;
    let slot = path::get_mut_or_create(doc, &segs, path_text)?;
    if slot.is_null() {
        *slot = Value::Array(Vec::new());
    }
    slot.as_array_mut()
        .ok_or_else(|| Error::Usage(format!("{path_text}: not an array")))?
        .push(v);
    Ok(())
}

/// `remove PATH INDEX`: one element of an array.
pub fn remove_at(doc: &mut Value, path_text: &str, index: usize) -> Result<()> {
    let segs = path::parse(path_text)?;
    let arr = path::get_mut_or_create(doc, &segs, path_text)?
        .as_array_mut()
        .ok_or_else(|| Error::Usage(format!("{path_text}: not an array")))?;
    if index >= arr.len() {
        return Err(Error::Usage(format!(
            "{path_text}[{index}]: out of range (length {})",
            arr.len()
        )));
    }
    arr.remove(index);
    Ok(())
}

/// `env set K=V` / `env unset K` on process.env (replacing an existing K).
pub fn env_set(doc: &mut Value, kv: &str) -> Result<()> {
    let key = kv
        .split_once('=')
        .map(|(k, _)| k)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Error::Usage(format!("{kv:?}: expected KEY=VALUE")))?;
    env_unset_quiet(doc, key);
    append(doc, "process.env", Value::String(kv.to_string()))
}

fn env_unset_quiet(doc: &mut Value, key: &str) -> bool {
    let Some(env) = doc
        .pointer_mut("/process/env")
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let before = env.len();
    env.retain(|e| e.as_str().and_then(|s| s.split('=').next()) != Some(key));
    env.len() != before
}

pub fn env_unset(doc: &mut Value, key: &str) -> Result<()> {
    if env_unset_quiet(doc, key) {
        Ok(())
    } else {
        Err(Error::Usage(format!("process.env: {key} is not set")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn edits_keep_unknown_fields_and_key_order() {
        let text = "{\n\t\"ociVersion\": \"1.2.0\",\n\t\"zzz.vendor\": {\"b\": 1, \"a\": 2},\n\t\"process\": {\"env\": [\"A=1\"], \"args\": [\"sh\"]}\n}\n";
        let mut doc: Value = serde_json::from_str(text).unwrap();
        set(&mut doc, "process.args[0]", json!("bash")).unwrap();
        env_set(&mut doc, "B=2").unwrap();
        env_set(&mut doc, "A=3").unwrap();
        let out = render(&doc, &indentation(text));
        let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["ociVersion", "zzz.vendor", "process"]);
        assert!(
            out.contains("\t\"zzz.vendor\": {\n\t\t\"b\": 1,\n\t\t\"a\": 2"),
            "{out}"
        );
        assert_eq!(doc["process"]["env"], json!(["B=2", "A=3"]));
        assert!(env_unset(&mut doc, "NOPE").is_err());
        assert!(unset(&mut doc, "process.nope").is_err());
        remove_at(&mut doc, "process.env", 0).unwrap();
        assert!(remove_at(&mut doc, "process.env", 5).is_err());
        append(
            &mut doc,
            "linux.uidMappings",
            json!({"containerID": 0, "hostID": 980, "size": 1}),
        )
        .unwrap();
        assert_eq!(doc["linux"]["uidMappings"][0]["hostID"], 980);
    }

    #[test]
    fn values_are_json_unless_string() {
        assert_eq!(value("42", false).unwrap(), json!(42));
        assert_eq!(value("[\"a\"]", false).unwrap(), json!(["a"]));
        assert_eq!(value("text", true).unwrap(), json!("text"));
        let e = value("text", false).unwrap_err().to_string();
        assert!(e.contains("--string"), "{e}");
    }

    #[test]
    fn problems_are_listed_with_their_paths() {
        let mut doc = crate::spec::default_config();
        assert!(
            problems(&doc, None).is_empty(),
            "{:?}",
            problems(&doc, None)
        );
        doc["linux"]["resources"]["cpu"] = json!({"cpus": "5-1"});
        doc["linux"]["seccomp"]["syscalls"][0]["args"] =
            json!([{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]);
        let p = problems(&doc, None);
        assert!(
            p.iter().any(|l| l.contains("linux.resources.cpu.cpus")),
            "{p:?}"
        );
        assert!(p.iter().any(|l| l.contains("args[0].index")), "{p:?}");
        doc["process"]["args"] = json!(7);
        let p = problems(&doc, None);
        assert!(p[0].contains("process.args"), "{p:?}");
    }
}
