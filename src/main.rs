//! The `unicache` command: bulk-writes records into several caches and
//! inspects them. All parsing of arguments lives in `cli/`; this file only
//! maps outcomes to the documented exit codes (0 success, 1 partial, 2 fatal).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
