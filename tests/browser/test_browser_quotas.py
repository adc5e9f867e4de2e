"""Quotas in a real Chromium: a message refused by a rate limit stays in the box (the rest: tests/test_quotas.py)."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from playwright.sync_api import expect

from conversations.models import Profile

from ..personas import fast_passwords  # noqa: F401 (autouse, as in tests/test_quotas.py)
from .conftest import send, sign_up

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.browser
def test_in_the_browser_a_refused_message_stays_in_the_box(live_daphne, page, fake):
    sign_up(page, live_daphne, "limited")

    def limit():
        try:
            Profile.objects.create(user=get_user_model().objects.get(username="limited"), messages_per_minute=1)
        finally:
            connections.close_all()

    # In a thread of its own: Playwright keeps an event loop running in this one, where Django refuses queries.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(limit).result()
    send(page, "first message")
    expect(page.locator("article.msg-assistant")).to_have_attribute("data-status", "complete")
    send(page, "second message")
    alert = page.locator("#notices [role=alert]")
    expect(alert).to_contain_text("You have asked for 1 reply in the last minute; your limit is 1 a minute.")
    expect(alert).to_contain_text("It resets at")
    expect(page.locator("#composer-input")).to_have_value("second message")
    expect(page.locator("article.msg-user")).to_have_count(1)
    assert len(fake.completions()) == 1
