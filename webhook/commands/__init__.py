"""The CLI's commands other than `serve`: each parses its input, uses the assembled parts, prints."""
