"""The AWS `query` protocol (IAM, STS): botocore's models, request decoding, XML responses and errors."""
