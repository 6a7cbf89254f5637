//! `/docs` works with no internet: the Swagger UI page and every asset it loads come from
//! the binary, none of them points at another origin, and the docs pages carry headers that
//! forbid loading from one (CSP) or being framed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// The `src="…"` and `href="…"` values of an HTML page.
fn references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            if let Some(end) = part.find('"') {
                found.push(part[..end].to_string());
            }
        }
    }
    found
}

fn external(reference: &str) -> bool {
    let r = reference.trim().to_ascii_lowercase();
    r.starts_with("http://") || r.starts_with("https://") || r.starts_with("//")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_page_and_every_asset_it_references_are_served_by_the_binary() {
    let app = spawn_app(Db::Sqlite).await;
    // `/docs` redirects to `/docs/`, whose relative references resolve under it
    let res = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.url().path(), "/docs/");
    let html = res.text().await.unwrap();
    assert!(html.contains("<div id=\"swagger-ui\">"), "{html}");
    let refs = references(&html);
    assert!(refs.len() >= 5, "{refs:?}");
    let mut scripts = 0;
    for r in &refs {
        assert!(!external(r), "/docs references another origin: {r}");
        let path = r.trim_start_matches("./");
        let url = if path.starts_with('/') {
            app.url(path)
        } else {
            app.url(&format!("/docs/{path}"))
        };
        let res = app.http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 200, "{url}");
        let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
        let body = res.text().await.unwrap_or_default();
        assert!(!body.is_empty(), "{url} is empty");
        if path.ends_with(".css") {
            assert!(
                content_type.starts_with("text/css"),
                "{url}: {content_type}"
            );
            // what a stylesheet loads: only data: URIs or files beside it
            for part in body.split("url(").skip(1) {
                let target = part.trim_start_matches(['"', '\'']);
                assert!(
                    !external(target),
                    "{url} loads {}",
                    &target[..target.len().min(60)]
                );
            }
        }
        if path.ends_with(".js") {
            scripts += 1;
            assert!(content_type.contains("javascript"), "{url}: {content_type}");
        }
        if path == "swagger-initializer.js" {
            // the UI's config: the local spec, and no validator badge from swagger.io
            assert!(body.contains("\"/openapi.json\""), "{body}");
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{body}"
            );
        }
    }
    assert_eq!(scripts, 3, "{refs:?}");
    let (status, spec) = app.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(spec["paths"].as_object().unwrap().len() >= 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_pages_carry_the_security_headers() {
    let app = spawn_app(Db::Sqlite).await;
    for path in [
        "/docs/",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-initializer.js",
        "/openapi.json",
        "/asyncapi",
        "/asyncapi.json",
    ] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers();
        let csp = h
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no CSP"))
            .to_str()
            .unwrap();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("http") && !csp.contains('*'), "{path}: {csp}");
        assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
    }
    // the redirect from /docs carries them too
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = plain.get(app.url("/docs")).send().await.unwrap();
    assert!(res.status().is_redirection());
    assert_eq!(res.headers()["location"], "/docs/");
    assert_eq!(res.headers()["x-frame-options"], "DENY");
}
