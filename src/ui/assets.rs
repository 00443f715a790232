//! The page's files, embedded in the binary at build time: the page itself (`index.html`,
//! `app.js`, `app.css`, written for it) and the vendored graph layout library, Cytoscape.js
//! with its dagre layout, minified as published on the npm registry, with their licences
//! (`assets/vendor/README.md` says which versions and where they came from).

use axum::http::header;
use axum::response::IntoResponse;

/// One embedded file and where it is served.
#[derive(Debug)]
pub struct Asset {
    /// The URL path.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// The bytes.
    pub body: &'static str,
}

impl Asset {
    const fn new(path: &'static str, content_type: &'static str, body: &'static str) -> Self {
        Self {
            path,
            content_type,
            body,
        }
    }

    /// The answer to a `GET` of it.
    pub fn response(&self) -> impl IntoResponse + use<> {
        ([(header::CONTENT_TYPE, self.content_type)], self.body)
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every file the page uses.
pub static ASSETS: &[Asset] = &[
    Asset::new("/", HTML, include_str!("assets/index.html")),
    Asset::new("/app.js", JS, include_str!("assets/app.js")),
    Asset::new("/app.css", CSS, include_str!("assets/app.css")),
    Asset::new(
        "/vendor/cytoscape.min.js",
        JS,
        include_str!("assets/vendor/cytoscape.min.js"),
    ),
    Asset::new(
        "/vendor/cytoscape-dagre.min.js",
        JS,
        include_str!("assets/vendor/cytoscape-dagre.min.js"),
    ),
    Asset::new(
        "/vendor/LICENSES.txt",
        TEXT,
        include_str!("assets/vendor/LICENSES.txt"),
    ),
];
