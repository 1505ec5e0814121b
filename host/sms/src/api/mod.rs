//! Front ends: REST (axum) and gRPC (tonic). Handlers stay thin: they convert, call [`Sms`], and
//! map errors once ([`SmsError`](crate::error::SmsError)).
//!
//! [`Sms`]: crate::service::Sms

pub mod admin;
pub mod body;
pub mod files;
pub mod grpc;
pub mod grpc_exec;
pub mod grpc_sms;
pub mod invoke;
pub mod nodes;
pub mod openapi;
pub mod rest;
pub mod stream;
pub mod tasks;
pub mod tokens;
