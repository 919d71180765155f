//! A small multi-tenant web app on axum: one schema per customer.
//!
//! `cargo run --example saas --features axum` starts it with no set-up: on
//! the PostgreSQL named by `DATABASE_URL`, or else on a throwaway server
//! deleted on exit. It migrates the database, keeps spare schemas ready,
//! listens on 127.0.0.1 (port from `--port`, else `PORT`, else 3000) and
//! prints curl commands to paste. `*.localhost` resolves to loopback, so
//! `http://acme.localhost:3000/` works in a browser once `acme` signed up.
//!
//! Two paths serve the same routes: the blocking one (r2d2 and
//! `CurrentTenant::run`, the default) and, built with `--features
//! axum,async` and run with `--async`, the async one (diesel-async:
//! `CurrentTenant::conn(&pool).await`, sign-up by `claim_spare_with`), the
//! one to copy for a new service:
//! `cargo run --example saas --features axum,async -- --async`.

#[path = "app.rs"]
#[allow(dead_code)] // the tests and the benchmark use more of it
mod app;

#[cfg(feature = "async")]
const USAGE: &str = "usage: saas [--port N] [--async]
  --port N   listen on port N (default: $PORT, else 3000)
  --async    serve on the async path (diesel-async AsyncSharedPool, queries
             awaited on each request's task); default: the blocking path
             (r2d2 SharedPool, CurrentTenant::run on tokio's blocking pool)";
#[cfg(not(feature = "async"))]
const USAGE: &str = "usage: saas [--port N]
  --port N   listen on port N (default: $PORT, else 3000)
Serves on the blocking path (r2d2 SharedPool, CurrentTenant::run on tokio's
blocking pool). For the async path (diesel-async), build with the `async`
feature and pass --async:
  cargo run --example saas --features axum,async -- --async";

/// The port and the path to serve on, from the command line.
fn parse_args() -> Result<(u16, app::Mode), String> {
    let mut args = std::env::args().skip(1);
    let mut port = None;
    #[cfg_attr(not(feature = "async"), allow(unused_mut))]
    let mut mode = app::Mode::Blocking;
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--port" => args.next().ok_or("--port needs a value")?,
            a if a.starts_with("--port=") => a["--port=".len()..].to_string(),
            #[cfg(feature = "async")]
            "--async" => {
                mode = app::Mode::Async;
                continue;
            }
            #[cfg(not(feature = "async"))]
            "--async" => {
                return Err("--async needs the `async` feature: \
                     cargo run --example saas --features axum,async -- --async"
                    .to_string())
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`: see --help")),
        };
        port = Some(value);
    }
    let port = port.or_else(|| std::env::var("PORT").ok());
    let port = match port {
        None => 3000,
        Some(p) => p
            .parse()
            .map_err(|_| format!("port `{p}` is not a number"))?,
    };
    Ok((port, mode))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (port, mode) = parse_args()?;
    // Each request on stderr with its tenant (`log_request` in app.rs), and
    // appschema's own spans and events: RUST_LOG=appschema=debug adds every
    // checkout and switch.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let server = appschema_tempdb::Server::from_env_or_start()?;
    match &server {
        appschema_tempdb::Server::External { .. } => {
            println!("Using the PostgreSQL server named by DATABASE_URL.")
        }
        appschema_tempdb::Server::Temp(cluster) => println!(
            "Started a throwaway PostgreSQL server in {} (deleted on exit).",
            cluster.dir().display()
        ),
        appschema_tempdb::Server::Citus(citus) => println!(
            "Started a throwaway Citus cluster (a coordinator and two workers); coordinator in {} (deleted on exit).",
            citus.coordinator().dir().display()
        ),
    }
    let running = app::start(&server.url(), port, mode).await?;
    let p = running.addr.port();
    println!(
        "Migrated; {spares} spare schemas ready. Listening on http://{addr}/ (Ctrl-C stops).
Serving on {path}.

Paste these:

  # sign up two tenants (on the apex host, localhost)
  curl -X POST -H 'content-type: application/json' -d '{{\"name\":\"acme\"}}' http://localhost:{p}/signup
  curl -X POST -H 'content-type: application/json' -d '{{\"name\":\"globex\",\"plan\":\"pro\"}}' http://localhost:{p}/signup

  # each tenant's own data (isolated tables), by host name
  curl -X POST -H 'Host: acme.localhost' -H 'content-type: application/json' -d '{{\"name\":\"Rocket\"}}' http://127.0.0.1:{p}/api/projects
  curl -X POST -H 'Host: acme.localhost' -H 'content-type: application/json' -d '{{\"title\":\"Buy fuel\"}}' http://127.0.0.1:{p}/api/projects/1/tasks
  curl -X POST -H 'Host: globex.localhost' -H 'content-type: application/json' -d '{{\"name\":\"Doomsday device\"}}' http://127.0.0.1:{p}/api/projects
  curl -H 'Host: acme.localhost' http://127.0.0.1:{p}/api/projects
  curl -H 'Host: globex.localhost' http://127.0.0.1:{p}/api/projects
  curl http://globex.localhost:{p}/api/account      # tenant + its plan (shared table)
  curl http://acme.localhost:{p}/                   # HTML page, or open it in a browser

  # an unknown host gets 404, a malformed one 400
  curl -i -H 'Host: nobody.localhost' http://127.0.0.1:{p}/api/projects
  curl -i -H 'Host: evil.com@acme.localhost' http://127.0.0.1:{p}/api/projects",
        spares = app::SPARES,
        addr = running.addr,
        path = mode.describe(),
    );
    tokio::signal::ctrl_c().await?;
    println!("Stopping.");
    running.stop();
    drop(server);
    Ok(())
}
