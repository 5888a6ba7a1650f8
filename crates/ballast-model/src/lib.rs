//! Wire types exchanged between ballast-agent and ballast-collector (work in progress).
