"""Pure image work: bytes and a frozen spec in, bytes and metadata out.

Nothing in this package talks to Kafka, S3, Redis or the environment.
"""
