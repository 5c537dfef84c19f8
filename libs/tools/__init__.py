"""Developer tools: the sluice CLI, the local suite, the benchmark and the client they share."""
