//! How a connection to a Plinth server is set up: the one place that builds the
//! `reqwest` client every Plinth caller uses (the CLI, the agent, the tests).

/// A client builder for talking to a Plinth server.
pub fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
}
