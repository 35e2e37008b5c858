use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match tcpmon::cli::parse() {
        Ok(cli) => cli,
        Err(usage_error) => {
            eprint!("{usage_error}");
            return ExitCode::from(2);
        }
    };
    match tcpmon::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcpmon: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
