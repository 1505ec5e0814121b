//! Host and Origin checks on a loopback listener (SMS's REST and web admin, the Spearlet's HTTP):
//! a web page of another site must not reach them through the browser of someone running `spear
//! dev` (DNS rebinding: `evil.example` made to resolve to 127.0.0.1). On a loopback listener a
//! request must name a loopback host (`Host: localhost:8080`, `127.0.0.1`, `[::1]`), and a
//! browser's `Origin`, when sent, must be a loopback one too; anything else is refused with 403 in
//! SMS's error shape (`permission_denied`). Listeners on other addresses check tokens instead.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Whether `host` (`name`, `name:port`, `[v6]:port`) is a loopback name.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why a request naming `host` (its `Host`, or its URI's authority) and `origin` (its `Origin`
/// header) is refused on a loopback listener, if it is.
pub fn refused(host: Option<&str>, origin: Option<&str>) -> Option<String> {
    if let Some(host) = host
        && !loopback_host(host)
    {
        return Some(format!(
            "Host `{host}` is not a loopback name, and this server listens on loopback only"
        ));
    }
    if let Some(origin) = origin {
        let host = origin
            .split_once("://")
            .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
        if !loopback_host(host) {
            return Some(format!(
                "Origin `{origin}` is not a loopback page, and this server listens on loopback only"
            ));
        }
    }
    None
}

/// A header's value as text (one that is not text is no loopback name).
fn text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

/// The middleware: pass when `loopback` is false or the request names loopback only (its `Host`,
/// else the authority of its URI, as HTTP/2 sends it).
pub async fn layer(State(loopback): State<bool>, req: Request, next: Next) -> Response {
    if loopback {
        let headers = req.headers();
        let host =
            text(headers, header::HOST).or_else(|| req.uri().authority().map(|a| a.as_str()));
        if let Some(why) = refused(host, text(headers, header::ORIGIN)) {
            tracing::warn!("{why}");
            let body = serde_json::json!({
                "error": {"code": "permission_denied", "message": why, "field": null}
            });
            return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_others() {
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "app.localhost:1",
            "127.0.0.1:8080",
            "127.8.9.1",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "[::2]:1",
            "",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn origins_are_checked_by_their_host() {
        let host = Some("127.0.0.1:8080");
        assert_eq!(refused(host, None), None);
        assert_eq!(refused(host, Some("http://localhost:8081")), None);
        assert!(
            refused(host, Some("http://evil.example"))
                .unwrap()
                .contains("Origin")
        );
        assert!(
            refused(host, Some("null")).is_some(),
            "an opaque origin is not loopback"
        );
        assert!(
            refused(Some("evil.example"), None)
                .unwrap()
                .contains("Host")
        );
    }
}
