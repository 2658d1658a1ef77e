use layerscope::{app, Config};
use tracing_subscriber::EnvFilter;

/// `layerscope healthcheck`: the container's HEALTHCHECK, with no curl in the image. Exits 0 when
/// GET /healthz on the configured port answers 200.
fn healthcheck() -> ! {
    use std::io::{Read, Write};
    let port = std::env::var("LAYERSCOPE_ADDR")
        .ok()
        .and_then(|a| a.rsplit(':').next().map(str::to_string))
        .unwrap_or_else(|| "8080".into());
    let ok = (|| -> std::io::Result<bool> {
        let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}"))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")?;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf)?;
        Ok(buf.starts_with(b"HTTP/1.1 200"))
    })()
    .unwrap_or(false);
    std::process::exit(if ok { 0 } else { 1 })
}

#[tokio::main]
async fn main() {
    use clap::Parser;
    let cli = layerscope::cli::Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("layerscope: bad configuration: {e}");
            std::process::exit(2);
        }
    };
    match &cli.command {
        None | Some(layerscope::cli::Command::Serve) => {}
        Some(layerscope::cli::Command::Healthcheck) => healthcheck(),
        Some(layerscope::cli::Command::Openapi) => {
            print!("{}", layerscope::api::contract::document());
            std::process::exit(0)
        }
        Some(command) => match layerscope::cli::run(command, config).await {
            Ok(text) => {
                print!("{text}");
                std::process::exit(0)
            }
            Err(f) => {
                eprintln!("layerscope: {}", f.message);
                std::process::exit(f.code)
            }
        },
    }
    let filter = EnvFilter::try_from_env("LAYERSCOPE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // A request's log line costs it no system call and no thread wake-up (see logging.rs);
    // colour codes only reach a terminal.
    let (writer, _flush_on_exit) = layerscope::logging::batch_stdout();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    if config.log_json {
        tracing_subscriber::fmt().json().with_writer(writer).with_env_filter(filter).init();
    } else if ansi {
        tracing_subscriber::fmt().with_writer(writer).with_env_filter(filter).init();
    } else {
        // the same text without colours, for less per line (logging::Line); request lines
        // formatted directly (logging::request)
        layerscope::logging::write_request_lines(writer.clone());
        tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(layerscope::logging::Line)
            .with_writer(writer)
            .with_env_filter(filter)
            .init();
    }
    let addr = config.addr;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("layerscope: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    tracing::info!(%addr, libtorch = layerscope::torch::device::libtorch_version(), cuda = tch::Cuda::is_available(), "layerscope listening");
    let header_timeout = std::time::Duration::from_secs(config.header_timeout_secs);
    let router = app(config);
    layerscope::server::serve(listener, router, header_timeout, shutdown_signal()).await;
    tracing::info!("layerscope stopped");
}

/// Resolves on SIGINT or SIGTERM; axum then stops accepting and lets in-flight requests finish.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
