import httpx


def test_prefect_server_fixture_answers(prefect_server):
    r = httpx.get(f"{prefect_server.api_url}/health", timeout=5)
    assert r.status_code == 200
