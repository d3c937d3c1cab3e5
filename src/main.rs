//! The `valuestream` binary: a Lambda function when `AWS_LAMBDA_RUNTIME_API` is set, otherwise
//! the command line (`serve`, `replay`, `create-table`).

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        runtime.block_on(valuestream::entrypoints::lambda::run())
    } else {
        runtime.block_on(valuestream::entrypoints::cli::run())
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("valuestream: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
