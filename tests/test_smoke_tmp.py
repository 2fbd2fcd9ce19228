def test_echo(stablecore_client):
    job = stablecore_client.run("testing.echo", {"text": "ab", "n": 2})
    assert job["state"] == "succeeded", job
