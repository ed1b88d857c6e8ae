//! stub
pub mod assign;
pub mod load;
pub mod notify;
