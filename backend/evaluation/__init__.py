"""The evaluation harness: the paper's annotation-stream protocol run through the service's own code."""
