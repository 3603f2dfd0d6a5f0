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
    #[cfg(feature = "torch")]
    Train(cmd::train::Args),
    #[cfg(feature = "torch")]
    Eval(cmd::eval::EvalArgs),
    #[cfg(feature = "torch")]
    Score(cmd::eval::ScoreArgs),
    Data(cmd::data::Args),
    Generate(cmd::sample::GenerateArgs),
    Complete(cmd::sample::CompleteArgs),
    UpscaleSize(cmd::sample::UpscaleArgs),
    UpscaleDepth(cmd::sample::UpscaleArgs),
    Batch(cmd::batch::Args),
    #[cfg(feature = "torch")]
    Bench(cmd::bench::Args),
    Info(cmd::info::Args),
}

/// The device a command was asked to run on (`--device`): sampling on the CPU runs the plain-Rust engine,
/// anything else libtorch, which a build without the `torch` feature (`make demo`) does not have.
#[derive(Clone, Debug)]
pub struct Device(String);

impl Device {
    /// Whether this is the CPU: `cpu`, or `auto` where no GPU is present (or libtorch is not built in).
    pub fn is_cpu(&self) -> bool {
        match self.0.as_str() {
            "cpu" => true,
            #[cfg(feature = "torch")]
            "auto" => !tch::Cuda::is_available(),
            #[cfg(not(feature = "torch"))]
            "auto" => true,
            _ => false,
        }
    }

    /// The libtorch device.
    #[cfg(feature = "torch")]
    pub fn torch(&self) -> spn::Result<tch::Device> {
        spn::parse_device(&self.0)
    }
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
    if !cli.cmd.is_train() {
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

impl Cmd {
    fn is_train(&self) -> bool {
        #[cfg(feature = "torch")]
        if matches!(self, Cmd::Train(_)) {
            return true;
        }
        false
    }
}

fn run(cli: Cli, given: Vec<String>) -> Result<()> {
    let device = Device(cli.device.clone());
    // Every command checks its device first: a misspelt one is an error, not the CPU.
    #[cfg(feature = "torch")]
    device.torch()?;
    #[cfg(not(feature = "torch"))]
    let _ = &given;
    #[cfg(not(feature = "torch"))]
    if !matches!(device.0.as_str(), "cpu" | "auto") {
        anyhow::bail!(
            "device '{}': this spn was built without libtorch and samples on the CPU only (build it with `make build` for CUDA)",
            device.0
        );
    }
    match cli.cmd {
        #[cfg(feature = "torch")]
        Cmd::Train(a) => cmd::train::run(a, given, device.torch()?),
        #[cfg(feature = "torch")]
        Cmd::Eval(a) => cmd::eval::run_eval(a, device.torch()?),
        #[cfg(feature = "torch")]
        Cmd::Score(a) => cmd::eval::run_score(a, device.torch()?),
        Cmd::Data(a) => cmd::data::run(a),
        Cmd::Generate(a) => cmd::sample::run_generate(a, device),
        Cmd::Complete(a) => cmd::sample::run_complete(a, device),
        Cmd::UpscaleSize(a) => cmd::sample::run_upscale(a, device, cmd::sample::Upscale::Size),
        Cmd::UpscaleDepth(a) => cmd::sample::run_upscale(a, device, cmd::sample::Upscale::Depth),
        Cmd::Batch(a) => cmd::batch::run(a, device),
        #[cfg(feature = "torch")]
        Cmd::Bench(a) => cmd::bench::run(a, device.torch()?),
        Cmd::Info(a) => cmd::info::run(a),
    }
}
