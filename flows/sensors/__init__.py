"""Inbox sensors: a watched folder and an S3 bucket, both feeding the stylize deployment."""
