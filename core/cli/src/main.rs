//! `spn`: training, evaluation, scoring, data preparation and generation from the command line. One module
//! per command (`cmd/`); the library (`spn`) has no CLI dependencies.
mod cmd;
mod io;
mod progress;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "spn",
    version,
    about = "Subscale Pixel Networks with Multidimensional Upscaling"
)]
struct Cli {
    /// cpu, cuda, cuda:N or auto (CUDA when present).
    #[arg(long, global = true, default_value = "auto")]
    device: String,
    /// More logging (-v info, -vv debug); RUST_LOG also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Train(cmd::train::Args),
    Eval(cmd::eval::EvalArgs),
    Score(cmd::eval::ScoreArgs),
    Data(cmd::data::Args),
    Generate(cmd::sample::GenerateArgs),
    Complete(cmd::sample::CompleteArgs),
    UpscaleSize(cmd::sample::UpscaleArgs),
    UpscaleDepth(cmd::sample::UpscaleArgs),
    Batch(cmd::batch::Args),
    Bench(cmd::bench::Args),
    Info(cmd::info::Args),
}

fn main() {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // Like other Unix tools, end quietly when the reader of stdout goes away (`spn info | head`). Not in
    // training, whose sockets to other ranks must report a dead peer as an error, not die of SIGPIPE.
    #[cfg(unix)]
    if !matches!(cli.cmd, Cmd::Train(_)) {
        // SAFETY: restoring the default disposition of SIGPIPE at start-up, before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let given = matches
        .subcommand()
        .map(|(_, m)| cmd::given(m))
        .unwrap_or_default();
    if let Err(e) = run(cli, given) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli, given: Vec<String>) -> Result<()> {
    let device = spn::parse_device(&cli.device)?;
    match cli.cmd {
        Cmd::Train(a) => cmd::train::run(a, given, device),
        Cmd::Eval(a) => cmd::eval::run_eval(a, device),
        Cmd::Score(a) => cmd::eval::run_score(a, device),
        Cmd::Data(a) => cmd::data::run(a),
        Cmd::Generate(a) => cmd::sample::run_generate(a, device),
        Cmd::Complete(a) => cmd::sample::run_complete(a, device),
        Cmd::UpscaleSize(a) => cmd::sample::run_upscale(a, device, cmd::sample::Upscale::Size),
        Cmd::UpscaleDepth(a) => cmd::sample::run_upscale(a, device, cmd::sample::Upscale::Depth),
        Cmd::Batch(a) => cmd::batch::run(a, device),
        Cmd::Bench(a) => cmd::bench::run(a, device),
        Cmd::Info(a) => cmd::info::run(a),
    }
}
