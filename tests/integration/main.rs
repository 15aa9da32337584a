//! Integration tests: one binary, one module per behaviour, every case on
//! SQLite, PostgreSQL and MySQL/MariaDB through the fixture.

#[macro_use]
mod fixture;
mod tasks;

mod admin;
mod boundaries;
mod browser;
mod cancel;
mod child;
mod cli;
mod cluster;
mod connect;
mod cron;
mod django;
mod embedded;
mod enqueue;
mod features;
mod fleet;
mod keys;
mod limits;
mod maintenance;
mod operate;
mod params;
mod poison;
mod prefetch;
mod prometheus;
mod queries;
mod readme;
mod resilience;
mod rows;
mod runner;
mod schema;
mod state;
mod traces;
mod web;
mod workflow_surface;
mod workflows;
