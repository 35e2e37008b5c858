use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match tcpmon::cli::parse() {
        Ok(cli) => cli,
        Err((message, status)) => {
            eprint!("{message}");
            return ExitCode::from(u8::try_from(status).unwrap_or(2));
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
