"""Redirects are never followed (issue 8 #6): the data request carries the access token, the token POST the
client secret. The error says the API redirected, from where to where (scheme, host and path only), and
which setting to check; before, a redirected data request lost its token and ended in "check that the
Connected App may use the sync API"."""

import pytest

from cg_dagster.lib.client import CustomerGaugeError, CustomerGaugeRedirectError, SyncParams
from cg_dagster.sandbox import SandboxFaults, SandboxServer
from cg_dagster_tests._fixtures_client import CLIENT_ID, SECRET, make_client, response_requests
from cg_dagster_tests._fixtures_http import TOKEN_OK, ScriptedAPI, page_body, token_reply

DATA_HINT = (
    "redirects are not followed, so the access token is not sent on; check api_base_url (CUSTOMERGAUGE_API_BASE_URL)"
)


@pytest.fixture(scope="module")
def server():
    with SandboxServer(records=50, client_id=CLIENT_ID, client_secret=SECRET) as srv:
        yield srv


@pytest.mark.parametrize(
    "location, shown",
    [
        (
            "http://localhost:{port}/v7/rest/sync/responses?per_page=100",
            "http://localhost:{port}/v7/rest/sync/responses",
        ),
        (
            "https://user:pw@proxy.example.com/login?token=abc#top",
            "https://proxy.example.com/login",
        ),
        (
            "/moved/v7/rest/sync/responses?cursor=5",
            "http://127.0.0.1:{port}/moved/v7/rest/sync/responses",
        ),
    ],
    ids=["moved-host", "proxy-login", "relative"],
)
def test_a_redirected_data_request_is_not_followed(server, location, shown):
    port = server.base_url.rsplit(":", 1)[1]
    server.faults = SandboxFaults(redirect_to=location.format(port=port))
    server.reset_log()
    with make_client(server.base_url) as client:
        token = client.access_token()
        with pytest.raises(CustomerGaugeRedirectError) as caught:
            list(client.iter_pages(SyncParams(per_page=100)))
    assert str(caught.value) == (
        f"GET {server.base_url}/v7/rest/sync/responses was redirected (302) to {shown.format(port=port)}: " + DATA_HINT
    )
    assert [(e.path, e.status) for e in response_requests(server)] == [("/v7/rest/sync/responses", 302)]
    assert server.token_requests == 1  # no token refresh: the redirect is not mistaken for a 401
    assert token not in str(caught.value) and SECRET not in str(caught.value)


def test_a_malformed_location_is_a_redirect_error_that_does_not_echo_it(server):
    server.faults = SandboxFaults(redirect_to="http://[::1")  # urllib cannot split it: a bare ValueError before
    server.reset_log()
    with make_client(server.base_url) as client, pytest.raises(CustomerGaugeRedirectError) as caught:
        list(client.iter_pages(SyncParams(per_page=100)))
    assert str(caught.value) == (
        f"GET {server.base_url}/v7/rest/sync/responses was redirected (302) to a malformed address (Location "
        "header not a URL): " + DATA_HINT
    )
    assert [(e.path, e.status) for e in response_requests(server)] == [("/v7/rest/sync/responses", 302)]


def test_a_redirect_without_location_and_an_echoed_token_are_reported_safely():
    answers = [
        (200, page_body([1], 10)),
        (307, b"", {"Location": "https://evil.example.com/scripted-token/x"}),
    ]
    with ScriptedAPI(answers) as api, make_client(api.base_url) as client:
        pages = client.iter_pages(SyncParams(per_page=1))
        assert next(pages).records == [{"number_customergauge": 1}]
        with pytest.raises(CustomerGaugeRedirectError) as caught:
            next(pages)
    assert str(caught.value) == (
        f"GET {api.base_url}/v7/rest/sync/responses was redirected (307) to "
        "https://evil.example.com/[redacted]/x: " + DATA_HINT
    )
    with (
        ScriptedAPI([(300, {"message": "Multiple Choices"})]) as api,
        make_client(api.base_url) as client,
    ):
        with pytest.raises(
            CustomerGaugeRedirectError,
            match=r"redirected \(300\) to nowhere \(no Location header\)",
        ):
            list(client.iter_pages(SyncParams()))


def test_a_redirected_token_request_names_both_ends_and_the_auth_setting():
    token_answers = [
        (
            301,
            b"",
            {"Location": "https://auth.example.com/oauth2/token?client_secret=x"},
        ),
        TOKEN_OK,
    ]
    with (
        ScriptedAPI([(200, page_body([], ...))], token_answers) as api,
        make_client(api.base_url) as client,
    ):
        with pytest.raises(CustomerGaugeRedirectError) as caught:
            client.access_token()
        assert api.token_posts == 1
    assert str(caught.value) == (
        f"POST {api.base_url}/oauth2/token was redirected (301) to https://auth.example.com/oauth2/token: "
        "redirects are not followed, so the client secret is not sent on; check auth_base_url "
        "(CUSTOMERGAUGE_AUTH_BASE_URL)"
    )


def test_token_request_redirect_does_not_send_client_secret_to_another_origin():
    with ScriptedAPI([token_reply()], [token_reply()]) as thief:
        other_origin = thief.base_url.replace("127.0.0.1", "localhost")  # different host name, plain http
        redirect = (307, b"", {"Location": other_origin + "/collect"})
        with ScriptedAPI([redirect], [redirect]) as auth, make_client(auth.base_url, max_retries=0) as client:
            try:
                client.access_token()  # before the fix: succeeded, with the token the other origin handed out
            except CustomerGaugeError:
                pass  # refusing the redirect is the fix
    leaked = [body for body in thief.token_bodies if SECRET.encode() in body]
    assert leaked == [], "the token POST (with client_secret) was re-sent to the redirect target"
