"""`featurestore parity` against a live server: zero mismatches at the materialization time,
and a mismatch report with exit 1 when the offline store says something else."""

from __future__ import annotations

from datetime import timedelta

from serving_kit import END, Example, Server, cli


def test_parity_holds_at_the_materialization_time(example: Example, server: Server) -> None:
    proc = cli("parity", "--service", "fraud_v1", "--sample", "150", "--repo", example.repo,
               "--target", server.target)
    assert f"parity of fraud_v1 at {END.isoformat()}" in proc.stdout, proc.stdout
    assert "0 mismatches" in proc.stdout and "parity holds" in proc.stdout, proc.stdout
    # 150 sampled entities plus one never seen, 24 features each.
    assert "151 entities, 3624 values" in proc.stdout, proc.stdout


def test_a_time_the_online_store_cannot_answer_is_refused(example: Example,
                                                                server: Server) -> None:
    earlier = (END - timedelta(days=120)).isoformat()
    proc = cli("parity", "--service", "fraud_v1", "--sample", "150", "--repo", example.repo,
               "--target", server.target, "--as-of", earlier, expect=1)
    # The server refuses a past read it cannot answer exactly, naming the view and the
    # earliest time it can, instead of answering with values that would mismatch.
    assert "parity holds" not in proc.stdout, proc.stdout
    assert "FAILED_PRECONDITION" in proc.stderr and "earliest as_of" in proc.stderr, proc.stderr


def test_unknown_service_is_an_error(example: Example, server: Server) -> None:
    proc = cli("parity", "--service", "nope", "--repo", example.repo, "--target", server.target,
               expect=1)
    assert "unknown feature service 'nope'" in proc.stderr
