//! The `flow` binary: parse arguments, set up logging, run the command, and
//! map its outcome to a documented exit code.

use std::io::Write;

use clap::Parser;

use flow::cli::{Cli, Command, HostsCommand};
use flow::commands::{self, exit};

fn main() {
    let cli = Cli::parse();
    init_tracing();
    let result = match &cli.command {
        Command::Validate(a) => commands::validate(a),
        Command::Plan(a) => commands::plan(a),
        Command::Run(a) => commands::run(a),
        Command::Resume(a) => commands::resume(a, false),
        Command::Attach(a) => commands::resume(a, true),
        Command::Fetch(a) => commands::fetch(a),
        Command::Analyze(a) => commands::analyze(a),
        Command::Compare(a) => commands::compare(a),
        Command::Report(a) => commands::report(a),
        Command::Status(a) => commands::status(a),
        Command::Stop(a) => commands::stop(a),
        Command::Sync(a) => commands::sync(a),
        Command::Export(a) => commands::export(a),
        Command::Merge(a) => commands::merge(a),
        Command::List(a) => commands::list(a),
        Command::Hosts(HostsCommand::Check(a)) => commands::hosts_check(a),
        Command::Exec(a) => commands::exec(a),
        Command::Ssh(a) => commands::ssh(a),
        Command::Reap(a) => commands::reap(a),
        Command::Schema(a) => commands::schema(a),
    };
    let code = match result {
        Ok(code) => code,
        Err(commands::Error::Invalid(rendered)) => {
            let _ = write!(std::io::stderr().lock(), "{rendered}");
            exit::INVALID
        }
        // A closed pipe (`flow plan … | head`) is not an error worth a message.
        Err(commands::Error::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            let mut msg = format!("error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            let _ = writeln!(std::io::stderr().lock(), "{msg}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}

/// `FLOW_LOG` sets tracing filters (e.g. `FLOW_LOG=flow=debug`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal;
    // Printing must never panic: a closed stderr (`flow … 2>&1 | head`)
    // loses the log lines, not the run.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .try_init();
}
