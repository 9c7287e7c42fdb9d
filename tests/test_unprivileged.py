"""A daemon started by an ordinary user serves that user only (single-user and
development use); requests for anyone else get `ERROR::...`."""

import os
import pwd

import pytest



@pytest.fixture
def single_user_site(daemon_factory, site_factory, users, session_user):
    """As root: a daemon running as uftptest2 and a site of uftptest2.
    Otherwise: the shared daemon, which already runs as the current user."""
    if users:
        user = users["uftptest2"]
        return site_factory(daemon=daemon_factory(name="unprivileged uftpd", run_as=user),
                            user=user)
    return site_factory(user=session_user)


@pytest.mark.beyond_reference  # the reference always tries setgroups() and its session dies
def test_serves_its_own_user(single_user_site):
    site = single_user_site
    data = os.urandom(100_000)
    c = site.control()
    c.stor("own.bin", data)
    assert site.path("own.bin").read_bytes() == data
    assert os.stat(site.path("own.bin")).st_uid == site.user.uid
    assert c.retr("own.bin")[1] == data


@pytest.mark.beyond_reference  # the reference accepts the request and fails in the session
def test_refuses_other_users(single_user_site):
    site = single_user_site
    others = [p.pw_name for p in pwd.getpwall() if p.pw_uid != site.user.uid]
    for name in [n for n in ("nobody", "uftptest1", "root") if n in others]:
        reply = site.announce(user=name)
        assert reply.startswith("ERROR::") and len(reply) > len("ERROR::"), \
            f"daemon of {site.user.name} accepted a request for {name}: {reply!r}"
