//! The Python side of a release: the site's interpreter and venvs (`interpreter`), which of a
//! bundle's wheels fit that interpreter (`select`), the wheel installer (`wheel`: unpack, check
//! `RECORD`, scripts, byte-compiling) and the shared wheel `store` that installs link from.

pub(crate) mod interpreter;
pub(crate) mod select;
pub mod store;
pub(crate) mod wheel;

pub use interpreter::{
    compile_bytecode, compile_bytecode_within, compile_trees, create_venv, parse_python_requirement, CompileReport,
    Interpreter, PythonError, Venv,
};
pub use wheel::{check_wheel, install_wheel, install_wheels, read_metadata, InstallOptions, RecordCheck, WheelError};
