//! Reading a jobs folder: `triggered/NAME/` and `continuous/NAME/`, which file runs in each,
//! what runs it, and its settings. A folder that cannot run gets an error of its own; the
//! others load regardless.

use super::settings::Settings;
use hinter_core::definition::validate_name;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// How a job folder is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Run on demand: an enqueue (API, hook, schedule, file change).
    Triggered,
    /// Started with the server and kept running (run by a later feature; loaded and shown).
    Continuous,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Triggered => "triggered",
            Kind::Continuous => "continuous",
        }
    }
}

/// The extensions hinter runs, with their interpreter, in the order documented.
pub const INTERPRETERS: [(&str, &[&str]); 6] = [
    ("sh", &["bash"]),
    ("py", &["python3"]),
    ("js", &["node"]),
    ("php", &["php"]),
    ("ps1", &["pwsh"]),
    ("jar", &["java", "-jar"]),
];

/// Extensions of Windows batch files: recognised, and refused on other systems.
const WINDOWS_ONLY: [&str; 2] = ["cmd", "bat"];

/// One job folder as loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptJob {
    pub name: String,
    pub kind: Kind,
    pub folder: PathBuf,
    /// The file that runs, relative to the folder; `None` when none could be chosen.
    pub file: Option<String>,
    /// What runs the file: the interpreter's name and arguments (`["java", "-jar"]`), empty
    /// for a file run directly.
    pub interpreter: Vec<String>,
    /// The program and arguments to run: the interpreter found in `PATH` (absolute), its
    /// arguments and the file; or the file alone.
    pub argv: Vec<OsString>,
    /// `None` when settings.job could not be read (see `error`).
    pub settings: Option<Settings>,
    /// Why it cannot run; `None` when it can.
    pub error: Option<String>,
}

impl ScriptJob {
    /// True if it can run.
    pub fn is_runnable(&self) -> bool {
        self.error.is_none()
    }
}

/// Everything in `dir`: its jobs, sorted by kind then name, and problems of the folder
/// itself (say, `dir/triggered` is a file).
pub fn load(dir: &Path, path_var: Option<&std::ffi::OsStr>) -> Vec<ScriptJob> {
    let mut jobs = Vec::new();
    for kind in [Kind::Triggered, Kind::Continuous] {
        let parent = dir.join(kind.as_str());
        let entries = match std::fs::read_dir(&parent) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::error!("cannot read the jobs folder {}: {e}", parent.display());
                continue;
            }
        };
        let mut folders: BTreeMap<String, PathBuf> = BTreeMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                tracing::error!("ignoring {}: its name is not UTF-8", path.display());
                continue;
            };
            if name.starts_with('.') || !path.is_dir() {
                continue;
            }
            folders.insert(name, path);
        }
        for (name, folder) in folders {
            jobs.push(load_folder(&name, kind, &folder, path_var));
        }
    }
    // One name, one definition: a continuous job may not take a triggered job's name.
    let triggered: Vec<String> = jobs
        .iter()
        .filter(|j| j.kind == Kind::Triggered)
        .map(|j| j.name.clone())
        .collect();
    for job in &mut jobs {
        if job.kind == Kind::Continuous && job.error.is_none() && triggered.contains(&job.name) {
            job.error = Some(format!(
                "{}: a triggered job has the same name; job names must be unique",
                job.folder.display()
            ));
        }
    }
    jobs
}

/// One folder: its settings and the file that runs.
pub fn load_folder(
    name: &str,
    kind: Kind,
    folder: &Path,
    path_var: Option<&std::ffi::OsStr>,
) -> ScriptJob {
    let mut job = ScriptJob {
        name: name.to_string(),
        kind,
        folder: folder.to_path_buf(),
        file: None,
        interpreter: Vec::new(),
        argv: Vec::new(),
        settings: None,
        error: None,
    };
    if let Err(e) = validate_name("job", name) {
        job.error = Some(format!(
            "{}: the folder's name is the job's name, and {}",
            folder.display(),
            e.message
        ));
        return job;
    }
    let settings = Settings::read(&folder.join("settings.job"));
    match choose_file(folder) {
        Ok(file) => {
            job.file = Some(file.name.clone());
            match runner(folder, &file, path_var) {
                Ok((interpreter, argv)) => {
                    job.interpreter = interpreter;
                    job.argv = argv;
                }
                Err(e) => job.error = Some(e),
            }
        }
        Err(e) => job.error = Some(e),
    }
    match settings {
        Ok(settings) => job.settings = Some(settings),
        // A settings error is reported first: it is what the user just edited, most likely.
        Err(e) => job.error = Some(e),
    }
    job
}

/// A file of a job folder that could run.
#[derive(Debug, Clone, PartialEq)]
struct Candidate {
    name: String,
    extension: Option<String>,
    executable: bool,
}

impl Candidate {
    fn is_run_file(&self) -> bool {
        self.name == "run" || self.name.starts_with("run.")
    }

    /// Runs here, or is a Windows batch file (chosen, then refused with a message).
    fn is_supported(&self) -> bool {
        match &self.extension {
            Some(ext) if INTERPRETERS.iter().any(|(known, _)| known == ext) => true,
            Some(ext) if WINDOWS_ONLY.contains(&ext.as_str()) => true,
            _ => self.executable,
        }
    }
}

/// `run.*` (or `run`) if one is supported, else the first supported file by name.
fn choose_file(folder: &Path) -> Result<Candidate, String> {
    let entries = std::fs::read_dir(folder)
        .map_err(|e| format!("{}: cannot read the folder: {e}", folder.display()))?;
    let mut candidates: Vec<Candidate> = Vec::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with('.') || name == "settings.job" {
            continue;
        }
        // Symbolic links are followed: a folder may link its script from elsewhere.
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let extension = Path::new(&name)
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase());
        candidates.push(Candidate {
            name,
            extension,
            executable: meta.permissions().mode() & 0o111 != 0,
        });
    }
    candidates.sort_by(|a, b| a.name.cmp(&b.name));
    let supported = |c: &&Candidate| c.is_supported();
    candidates
        .iter()
        .filter(|c| c.is_run_file())
        .find(supported)
        .or_else(|| candidates.iter().find(supported))
        .cloned()
        .ok_or_else(|| {
            let extensions: Vec<String> = INTERPRETERS
                .iter()
                .map(|(ext, _)| format!(".{ext}"))
                .collect();
            format!(
                "{}: nothing to run: no run.* file and no file ending in {} or with the \
                 execute bit",
                folder.display(),
                extensions.join(", ")
            )
        })
}

/// What runs `file`: by extension an interpreter found in `PATH`, else the file itself.
fn runner(
    folder: &Path,
    file: &Candidate,
    path_var: Option<&std::ffi::OsStr>,
) -> Result<(Vec<String>, Vec<OsString>), String> {
    let path = folder.join(&file.name);
    // Absolute, so the job's working directory does not change what runs.
    let path = std::path::absolute(&path).unwrap_or(path);
    if let Some(ext) = &file.extension {
        if WINDOWS_ONLY.contains(&ext.as_str()) {
            return Err(format!(
                "{}: .{ext} files run only on Windows; on this system use a .sh script (or \
                 another supported file)",
                path.display()
            ));
        }
        if let Some((_, interpreter)) = INTERPRETERS.iter().find(|(known, _)| known == ext) {
            let Some((program, args)) = interpreter.split_first() else {
                return Err(format!(
                    "{}: no interpreter is known for .{ext}",
                    path.display()
                ));
            };
            let found = find_in_path(program, path_var).ok_or_else(|| {
                format!(
                    "{}: {program} is not installed (not found in PATH), and .{ext} files run \
                     with it",
                    path.display()
                )
            })?;
            let mut argv: Vec<OsString> = vec![found.into_os_string()];
            argv.extend(args.iter().map(OsString::from));
            argv.push(path.into_os_string());
            return Ok((interpreter.iter().map(|s| s.to_string()).collect(), argv));
        }
    }
    Ok((Vec::new(), vec![path.into_os_string()]))
}

/// The first executable file named `program` in the directories of `path_var`.
pub fn find_in_path(program: &str, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str, executable: bool) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// A PATH with fake interpreters (bash, python3) and nothing else.
    fn fake_path(dir: &Path) -> OsString {
        let bin = dir.join("bin");
        for program in ["bash", "python3", "java"] {
            write(&bin.join(program), "#!/bin/sh\n", true);
        }
        bin.into_os_string()
    }

    #[test]
    fn the_file_that_runs_and_its_interpreter() {
        let dir = tempfile::tempdir().expect("temp dir");
        let jobs = dir.path().join("jobs");
        let path = fake_path(dir.path());
        let t = jobs.join("triggered");
        write(&t.join("a/run.py"), "", false);
        write(&t.join("a/helper.sh"), "", false);
        // Without run.*, the first supported file by name.
        write(&t.join("b/notes.txt"), "", false);
        write(&t.join("b/zz.sh"), "", false);
        write(&t.join("b/go.py"), "", false);
        // The execute bit runs a file directly.
        write(&t.join("c/tool"), "", true);
        write(&t.join("d/app.jar"), "", false);
        // A run.* that cannot run is passed over for one that can.
        write(&t.join("e/run.txt"), "", false);
        write(&t.join("e/start.sh"), "", false);
        write(&t.join("f/run.cmd"), "", false);
        write(&t.join("g/readme.txt"), "", false);
        write(&t.join("h/run.js"), "", false);
        write(&t.join("i/run.sh"), "", false);
        write(&t.join("i/settings.job"), r#"{"timeout": "often"}"#, false);
        write(&t.join("bad name/run.sh"), "", false);
        write(&jobs.join("continuous/a/run.sh"), "", false);
        write(&jobs.join("continuous/idx/run.sh"), "", false);
        write(
            &t.join("README.md"),
            "a file among the folders is ignored",
            false,
        );

        let loaded = load(&jobs, Some(&path));
        let by = |kind: Kind, name: &str| {
            loaded
                .iter()
                .find(|j| j.kind == kind && j.name == name)
                .unwrap_or_else(|| panic!("{name} loaded: {loaded:#?}"))
                .clone()
        };
        let bin = dir.path().join("bin");
        let a = by(Kind::Triggered, "a");
        assert_eq!(a.error, None);
        assert_eq!(a.file.as_deref(), Some("run.py"));
        assert_eq!(a.interpreter, vec!["python3"]);
        assert_eq!(
            a.argv,
            vec![
                bin.join("python3").into_os_string(),
                t.join("a/run.py").into_os_string()
            ]
        );
        assert_eq!(by(Kind::Triggered, "b").file.as_deref(), Some("go.py"));
        let c = by(Kind::Triggered, "c");
        assert_eq!((c.file.as_deref(), c.interpreter.len()), (Some("tool"), 0));
        assert_eq!(c.argv, vec![t.join("c/tool").into_os_string()]);
        let d = by(Kind::Triggered, "d");
        assert_eq!(d.interpreter, vec!["java", "-jar"]);
        assert_eq!(d.argv[1], OsString::from("-jar"));
        assert_eq!(by(Kind::Triggered, "e").file.as_deref(), Some("start.sh"));
        let f = by(Kind::Triggered, "f").error.expect("run.cmd refused");
        assert!(f.contains("run.cmd: .cmd files run only on Windows"), "{f}");
        let g = by(Kind::Triggered, "g").error.expect("nothing to run");
        assert!(g.contains("nothing to run: no run.* file"), "{g}");
        let h = by(Kind::Triggered, "h").error.expect("node missing");
        assert!(
            h.contains("node is not installed (not found in PATH)"),
            "{h}"
        );
        let i = by(Kind::Triggered, "i").error.expect("bad settings");
        assert!(i.contains("settings.job: \"timeout\":"), "{i}");
        let bad = by(Kind::Triggered, "bad name").error.expect("bad name");
        assert!(bad.contains("contains ' '"), "{bad}");
        let clash = by(Kind::Continuous, "a").error.expect("name clash");
        assert!(
            clash.contains("a triggered job has the same name"),
            "{clash}"
        );
        assert_eq!(by(Kind::Continuous, "idx").error, None);
        assert_eq!(loaded.len(), 12, "{loaded:#?}");
    }
}
