"""Online serving over gRPC: the server (`featurestore serve`), its wire encoding, and the
Python client. Imports the Plan and online/; nothing imports serving/ but the CLI and the
public API's Client."""
