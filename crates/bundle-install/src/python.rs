//! The site interpreter and native venv creation (being written).
