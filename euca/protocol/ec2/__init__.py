"""The EC2 Query API on the wire, sans-I/O: parse requests into typed values, render results and errors.

- wire.py: the model-driven Query decoder and XML renderer, Ec2Error;
- filters.py: Filter.N / tag filters and MaxResults/NextToken pages shared by every Describe action;
- messages.py: the typed requests and results of the actions euca answers.
"""

from euca.protocol.ec2.wire import (
    API_VERSION,
    Ec2Error,
    QueryEnvelope,
    envelope,
    is_known_action,
    new_request_id,
    parse_form,
    parse_request,
    render_error,
    render_response,
)

__all__ = [
    "API_VERSION",
    "Ec2Error",
    "QueryEnvelope",
    "envelope",
    "is_known_action",
    "new_request_id",
    "parse_form",
    "parse_request",
    "render_error",
    "render_response",
]
