//! Where the user service keeps its copy of each user in Redis, beside the
//! sessions: the user service writes the copies and the auth service reads
//! them, so both name them through here.

/// The start of every copy's key: the script that reads a session builds
/// the rest from the session's appid and openid.
pub fn key_prefix(prefix: &str) -> String {
    format!("{prefix}user:")
}

/// The key of the copy of (appid, openid).
pub fn key(prefix: &str, appid: &str, openid: &str) -> String {
    format!("{}{appid}:{openid}", key_prefix(prefix))
}
