//! The operator's commands, run from a terminal instead of serving MCP.

pub(crate) mod doctor;
pub(crate) mod install;
pub(crate) mod jobs;
pub(crate) mod settings;

use crate::cli::{Cli, Command};
use crate::config::Loaded;

/// Runs `command` (a terminal's, not MCP): its output goes to stdout, its notes to stderr.
/// False when it ran and found something wrong (`doctor`'s problems).
pub fn run(loaded: &Loaded, command: &Command) -> anyhow::Result<bool> {
    let cli = &loaded.cli;
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    match command {
        Command::Config { json } => {
            settings::print(loaded, *json, &mut stdout.lock())?;
            Ok(true)
        }
        Command::Doctor { json } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(doctor::run(cli, *json, &mut stdout.lock()))
        }
        Command::Jobs(args) => jobs::run(
            args,
            &cli.state_dir()?,
            cli.retention,
            &mut stdout.lock(),
            &mut stderr.lock(),
        )
        .map(|()| true),
        Command::Install(args) => install::install(cli, args, &mut stdout.lock()).map(|()| true),
        Command::Uninstall(args) => install::uninstall(args, &mut stdout.lock()).map(|()| true),
        Command::Completions { shell } => {
            let mut definition = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut definition, NAME, &mut stdout.lock());
            Ok(true)
        }
        Command::Man => {
            let definition = <Cli as clap::CommandFactory>::command().name(NAME);
            clap_mangen::Man::new(definition).render(&mut stdout.lock())?;
            Ok(true)
        }
    }
}

/// The command's name, as completions and the man page call it.
const NAME: &str = "codex-async-mcp";
