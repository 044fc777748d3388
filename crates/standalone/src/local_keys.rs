//! The `wxlogin` binary's data keys on SQLite: made once, in a file beside
//! the database (`<database>.keys`, mode 0600), and read at every start. It
//! must never log or return the keys anywhere but into the settings.

use std::path::PathBuf;

use wxlogin_common::config::{Source, optional};
use wxlogin_userdata::sealing::{INDEX_KEY_VAR, KEYS_VAR, Zeroizing, generate_key};

use crate::error::Error;

/// Data keys made for a single-process setup, and where they are kept.
pub(crate) struct LocalKeys {
    pub(crate) values: Vec<(&'static str, String)>,
    pub(crate) described: String,
}

/// The key file's id for the data key it makes.
const LOCAL_KEY_ID: &str = "local1";

/// The data keys from the key file beside the SQLite database of `url` (made the
/// first time), when the environment lacks one of them; `None` when it has
/// both, or when the database is not SQLite (then the services refuse to
/// start without them).
pub(crate) fn local_keys(env: &dyn Source, url: &str) -> Result<Option<LocalKeys>, Error> {
    if optional(env, KEYS_VAR).is_some() && optional(env, INDEX_KEY_VAR).is_some() {
        return Ok(None);
    }
    let Some(path) = sqlite_path(url) else {
        return Ok(None);
    };
    let random = |error: wxlogin_userdata::sealing::SealError| Error::Random(error.to_string());
    let Some(path) = path else {
        // An in-memory database lives as long as the process: so do its keys.
        let values = vec![
            (
                KEYS_VAR,
                format!(
                    "{LOCAL_KEY_ID}:{}",
                    generate_key().map_err(random)?.as_str()
                ),
            ),
            (INDEX_KEY_VAR, generate_key().map_err(random)?.to_string()),
        ];
        return Ok(Some(LocalKeys {
            values,
            described: "made for this process (in-memory database)".into(),
        }));
    };
    let mut file = path.into_os_string();
    file.push(".keys");
    let file = PathBuf::from(file);
    let failed = |message: String| Error::KeyFile {
        path: file.display().to_string(),
        message,
    };
    let created = match std::fs::metadata(&file) {
        Ok(_) => false,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let text = format!(
                "# wxlogin's data keys for the SQLite database beside this file.\n\
                 # Keep them together: without this file its personal data cannot be read.\n\
                 {KEYS_VAR}={LOCAL_KEY_ID}:{}\n{INDEX_KEY_VAR}={}\n",
                generate_key().map_err(random)?.as_str(),
                generate_key().map_err(random)?.as_str(),
            );
            write_private(&file, &text).map_err(|error| failed(error.to_string()))?;
            true
        }
        Err(error) => return Err(failed(error.to_string())),
    };
    let text = Zeroizing::new(std::fs::read_to_string(&file).map_err(|e| failed(e.to_string()))?);
    let mut values = Vec::new();
    for name in [KEYS_VAR, INDEX_KEY_VAR] {
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .ok_or_else(|| failed(format!("has no {name}= line")))?;
        values.push((name, value.trim().to_owned()));
    }
    let described = format!(
        "{} {}",
        if created { "created" } else { "read from" },
        file.display()
    );
    // The file, never the keys.
    tracing::info!(file = %file.display(), created, "data keys of the single-process setup");
    Ok(Some(LocalKeys { values, described }))
}

/// Creates `path` with `text`, readable by its owner alone; fails if it
/// exists.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// The file of a `sqlite:` URL: `Some(None)` for an in-memory database,
/// `None` when the URL is not SQLite's.
fn sqlite_path(url: &str) -> Option<Option<PathBuf>> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return Some(None);
    }
    Some(Some(PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::sqlite_path;
    use std::path::PathBuf;

    #[test]
    fn the_key_file_goes_beside_the_sqlite_file() {
        assert_eq!(
            sqlite_path("sqlite://wxlogin.sqlite3"),
            Some(Some(PathBuf::from("wxlogin.sqlite3")))
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/x.db?mode=rwc"),
            Some(Some(PathBuf::from("/var/lib/x.db")))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), Some(None));
        assert_eq!(sqlite_path("mysql://db/x"), None);
    }
}
