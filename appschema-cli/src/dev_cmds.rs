//! `appschema-cli dev`: a persistent local development server, its data
//! kept in the project (`appschema_tempdb::DevCluster`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use appschema_tempdb::{DevCluster, DevStatus};
use clap::Subcommand;

/// `appschema-cli dev …`.
#[derive(Debug, Subcommand)]
pub(crate) enum DevCommand {
    /// A local PostgreSQL for development.
    ///
    /// Its data kept in the project
    /// (`.appschema/pgdata`, git-ignored), listening on 127.0.0.1 on a port
    /// chosen once, with a generated password. Run as root, the server runs
    /// as the `postgres` user.
    #[command(after_help = "Examples:
  eval \"$(appschema-cli dev start)\"    # starts it, sets DATABASE_URL
  appschema-cli dev status
  appschema-cli dev stop                # data kept for the next start
  export DATABASE_URL=$(appschema-cli dev url)")]
    Dev {
        #[command(subcommand)]
        command: DevSubcommand,
        /// Where the server's data, log and URL are kept.
        #[arg(long, global = true, default_value = ".appschema")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DevSubcommand {
    /// Starts the development server, creating it on first use.
    ///
    /// Creates the server on first use, else starts it with its data; does
    /// nothing when it runs. Prints `export DATABASE_URL=…` on stdout.
    #[command(after_help = "Examples:
  appschema-cli dev start
  eval \"$(appschema-cli dev start)\"    # and set DATABASE_URL in this shell
  appschema-cli dev start --dir /var/tmp/myapp-dev")]
    Start,
    /// Stops the server (fast shutdown), keeping its data.
    #[command(after_help = "Examples:
  appschema-cli dev stop")]
    Stop,
    /// Says whether the server exists and runs (exit 3 when stopped or not created).
    #[command(after_help = "Examples:
  appschema-cli dev status")]
    Status,
    /// Prints the server's connection URL.
    #[command(after_help = "Examples:
  appschema-cli dev url
  psql \"$(appschema-cli dev url)\"")]
    Url,
}

pub(crate) fn run(command: DevCommand) -> Result<ExitCode> {
    let DevCommand::Dev { command, dir } = command;
    let dev = DevCluster::new(&dir);
    let data = dir.join("pgdata");
    match command {
        DevSubcommand::Start => {
            let started = dev.start()?;
            let what = if started.already_running {
                "already running"
            } else if started.created {
                "created and started"
            } else {
                "started"
            };
            eprintln!(
                "development server {what} (data in {}, log in {})",
                data.display(),
                dir.join("postgres.log").display()
            );
            println!("export DATABASE_URL={}", started.url);
        }
        DevSubcommand::Stop => {
            if dev.stop()? {
                eprintln!(
                    "development server stopped (data kept in {})",
                    data.display()
                );
            } else {
                eprintln!("development server was not running");
            }
        }
        DevSubcommand::Status => {
            return Ok(match dev.status()? {
                DevStatus::Running { pid } => {
                    println!("running (pid {pid}, data in {})", data.display());
                    ExitCode::SUCCESS
                }
                DevStatus::Stopped => {
                    println!("stopped (data in {})", data.display());
                    ExitCode::from(3)
                }
                DevStatus::NotCreated => {
                    println!(
                        "not created: `appschema-cli dev start` creates it in {}",
                        dir.display()
                    );
                    ExitCode::from(3)
                }
            });
        }
        DevSubcommand::Url => println!("{}", dev.url()?),
    }
    Ok(ExitCode::SUCCESS)
}
