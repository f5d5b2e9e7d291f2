//! `sluice guest deploy`: one `POST /v1/modules` (README's REST API table).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use super::step;

/// The server compiles the component before it answers: 7-16 s for a Python or JavaScript
/// guest on two cores (guest-sdk/README.md), longer on a busy server.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Uploads `file` as the tenant of `token`; prints the module id on stdout.
pub(super) async fn deploy(file: &Path, server: &str, token: &str) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let url = modules_url(server)?;
    step(format!(
        "uploading {} ({} bytes) to {url}",
        file.display(),
        bytes.len()
    ));
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let response = client
        .post(url.clone())
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/wasm")
        .body(bytes)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if !status.is_success() {
        bail!("{}", refusal(status.as_u16(), &answer, &body));
    }
    let (Some(id), Some(world)) = (answer["id"].as_str(), answer["world"].as_str()) else {
        bail!("the server answered {status} without a module id: {body}");
    };
    let known = if status.as_u16() == 200 {
        " (already uploaded)"
    } else {
        ""
    };
    step(format!("module {id}: world {world}{known}"));
    println!("{id}");
    Ok(())
}

/// `<server>/v1/modules`; the server is a base URL, perhaps with a path prefix.
fn modules_url(server: &str) -> anyhow::Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(server)
        .with_context(|| format!("--server {server}: not a URL (e.g. http://127.0.0.1:8080)"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("--server {server}: an http:// or https:// URL");
    }
    let path = format!("{}/v1/modules", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url)
}

/// The server's refusal as one line: its status, error code and message (README: errors are
/// `{"error": {"code", "message"}}`).
fn refusal(status: u16, answer: &serde_json::Value, body: &str) -> String {
    match (
        answer["error"]["code"].as_str(),
        answer["error"]["message"].as_str(),
    ) {
        (Some(code), Some(message)) => {
            format!("the server refused the module: {status} {code}: {message}")
        }
        _ => format!(
            "the server refused the module: {status}: {}",
            super::tail(body, 5)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_modules_route_is_under_the_servers_url() {
        for (server, url) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1/modules"),
            ("http://h:1/", "http://h:1/v1/modules"),
            ("https://h/sluice/", "https://h/sluice/v1/modules"),
        ] {
            assert_eq!(modules_url(server).unwrap().as_str(), url);
        }
        for bad in ["127.0.0.1:8080", "ftp://h/", "not a url"] {
            assert!(modules_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_refusal_names_the_code_and_message() {
        let answer = serde_json::json!({"error": {"code": "module_too_large", "message": "module is 40 bytes, more than the 32 accepted"}});
        assert_eq!(
            refusal(413, &answer, ""),
            "the server refused the module: 413 module_too_large: module is 40 bytes, more than the 32 accepted"
        );
        assert_eq!(
            refusal(502, &serde_json::Value::Null, "Bad gateway\n"),
            "the server refused the module: 502: Bad gateway"
        );
    }
}
