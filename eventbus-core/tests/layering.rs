//! The architecture invariant of ARCHITECTURE.md, checked on the source: nothing under
//! `eventbus-core/src` but the API module (`bus/`) and the crate root imports the API module.
//! Doc comments may link to it; code may not use it.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the source directory is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// True when a line of code (not a comment) names the API module or its `Bus`.
fn uses_the_api(line: &str) -> bool {
    let code = line.trim_start();
    if code.starts_with("//") {
        return false;
    }
    let code = code.split("//").next().unwrap_or(code);
    code.contains("crate::bus")
        || code.contains("crate::Bus")
        || code.contains("crate::testing")
        || (code.contains("use crate::{")
            && code
                .split(|c: char| !c.is_alphanumeric() && c != '_')
                .any(|word| word == "Bus" || word == "BusBuilder" || word == "testing"))
}

#[test]
fn nothing_below_the_api_module_imports_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 20,
        "found the sources ({} files)",
        files.len()
    );
    let mut offenders = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("below src");
        if relative.starts_with("bus") || relative == Path::new("lib.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("a source file is UTF-8");
        for (n, line) in text.lines().enumerate() {
            if uses_the_api(line) {
                offenders.push(format!("{}:{}: {}", relative.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "these lines reach up into the API module (crate::bus); pass the engine instead:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_check_sees_an_import_of_the_api() {
    assert!(uses_the_api("use crate::bus::Bus;"));
    assert!(uses_the_api("use crate::{Bus, Context};"));
    assert!(uses_the_api("    let b: crate::Bus = todo!();"));
    assert!(!uses_the_api(
        "/// See [`Bus::request`](crate::Bus::request)."
    ));
    assert!(!uses_the_api(
        "use crate::engine::{Engine, PublishOptions};"
    ));
    assert!(!uses_the_api("use crate::{BusConfig, Context};"));
}
