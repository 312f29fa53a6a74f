"""Every website snippet of the user document (README, "Track a website"), verbatim, in a real Chromium against the real server."""

import datetime as dt

import pytest

pytestmark = pytest.mark.browser

TITLE = "Some Cool Product"


def page_with(tracker, body="", calls="mt('send', 'pageview');", title=TITLE):
    return f"<!doctype html><html><head><title>{title}</title></head><body>{body}{tracker.loader(calls)}</body></html>"


def open_tracked(context, url, endpoint="/mtc/event"):
    """Open a page and wait until the tracker answered (the hit is stored before the answer)."""
    page = context.new_page()
    with page.expect_response(lambda r: endpoint in r.url and r.request.method != "OPTIONS") as answer:
        page.goto(url)
    assert answer.value.status == 200
    return page


def test_loader_snippet_records_the_page_view(tracker, site, context):
    site.pages["/start.html"] = '<!doctype html><a id="go" href="/product.html">go</a>'
    site.pages["/product.html"] = page_with(tracker)
    page = context.new_page()
    page.goto(site.url("/start.html"))
    with page.expect_response(lambda r: "/mtc/event" in r.url and r.request.method == "POST") as answer:
        page.click("#go")
    body = answer.value.json()

    hit = tracker.db.hits.find_one()
    assert hit["url"] == site.url("/product.html")
    assert hit["title"] == TITLE
    assert hit["referrer"] == site.url("/start.html")
    assert hit["language"] == page.evaluate("navigator.language")
    assert hit["endpoint"] == "event" and hit["counter"] == 0
    assert hit["contact_id"] == body["id"] and hit["device_id"] == body["device_id"]
    fingerprint = hit["fingerprint"]
    assert len(fingerprint["hash"]) == 28
    assert fingerprint["resolution"] == page.evaluate("screen.width + 'x' + screen.height")
    assert fingerprint["timezone_offset"] == page.evaluate("new Date().getTimezoneOffset()")
    assert fingerprint["platform"] == "Linux"
    assert fingerprint["adblock"] is False and fingerprint["do_not_track"] is False
    assert hit["timezone"] == page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")
    assert hit["user_agent"]["browser"] in ("Headless Chrome", "Chrome")
    device = tracker.db.devices.find_one({"_id": body["device_id"]})
    assert device["fingerprint"]["hash"] == fingerprint["hash"]
    # The first-party cookie of the user document, for the site's own server-side code.
    cookies = {c["name"]: c["value"] for c in context.cookies(site.url("/"))}
    assert cookies["mtc_id"] == body["id"]
    assert page.evaluate("localStorage.getItem('mautic_device_id')") == body["device_id"]


def test_fingerprint_is_stable_across_page_loads(tracker, site, context):
    site.pages["/a.html"] = page_with(tracker)
    open_tracked(context, site.url("/a.html"))
    open_tracked(context, site.url("/a.html"))
    hashes = {h["fingerprint"]["hash"] for h in tracker.db.hits.find()}
    assert len(hashes) == 1


def test_custom_parameters(tracker, site, context):
    tracker.make_public("email", "firstname")
    site.pages["/p.html"] = page_with(
        tracker, calls="mt('send', 'pageview', {email: 'my@email.com', firstname: 'John'});"
    )
    open_tracked(context, site.url("/p.html"))
    contact = tracker.db.contacts.find_one()
    assert contact["fields"]["email"] == "my@email.com"
    assert contact["fields"]["firstname"] == "John"
    assert contact["anonymous"] is False


def test_custom_parameters_are_ignored_unless_publicly_updatable(tracker, site, context):
    site.pages["/p.html"] = page_with(
        tracker, calls="mt('send', 'pageview', {email: 'my@email.com', firstname: 'John'});"
    )
    open_tracked(context, site.url("/p.html"))
    assert "email" not in tracker.db.contacts.find_one()["fields"]


def test_load_event(tracker, site, context):
    tracker.make_public("email", "firstname")
    calls = (
        "mt('send', 'pageview', {email: 'my@email.com', firstname: 'John'}, "
        '{onload: function() { alert("Tracking request is loaded"); }});'
    )
    site.pages["/load.html"] = page_with(tracker, calls=calls)
    page = context.new_page()
    with page.expect_event("dialog") as dialog:
        page.goto(site.url("/load.html"))
    assert dialog.value.message == "Tracking request is loaded"
    dialog.value.accept()
    assert tracker.db.hits.count_documents({}) == 1  # recorded before onload ran


CALLBACKS = """
    function redirect() { window.location.href = '/thanks.html'; }
    mt('send', 'pageview', {}, {
        onload: function() {
            redirect();
        },
        onerror: function() {
            redirect();
        }
    });
"""


def test_onload_callback_of_2_2_0(tracker, site, context):
    site.pages["/cb.html"] = page_with(tracker, calls=CALLBACKS)
    site.pages["/thanks.html"] = "<!doctype html><title>Thanks</title>"
    page = context.new_page()
    page.goto(site.url("/cb.html"))
    page.wait_for_url(site.url("/thanks.html"))
    assert tracker.db.hits.find_one()["url"] == site.url("/cb.html")


def test_onerror_fires_when_the_server_is_down(tracker, site, context):
    calls = """
        mt('send', 'pageview', {}, {
            onload: function() { window.outcome = 'load'; },
            onerror: function() { window.outcome = 'error'; }
        });
    """
    site.pages["/down.html"] = page_with(tracker, calls=calls)
    page = context.new_page()
    page.goto(site.url("/down.html"))  # the script itself loads; then the server "goes down"
    page.wait_for_function("window.mt && window.mt.version")
    page.route("**/mtc/event", lambda route: route.abort())
    page.route("**/mtracking.gif*", lambda route: route.abort())
    page.evaluate(
        "mt('send', 'pageview', {}, {onload: function() { window.second = 'load'; },"
        " onerror: function() { window.second = 'error'; }})"
    )
    page.wait_for_function("window.second !== undefined")
    assert page.evaluate("window.second") == "error"
    assert tracker.db.hits.count_documents({}) == 1  # only the page view from before the outage


def test_onerror_with_the_server_down_from_the_start(tracker, site, context):
    calls = "mt('send', 'pageview', {}, {onload: function() { window.outcome = 'load'; }, onerror: function() { window.outcome = 'error'; }});"
    site.pages["/down.html"] = page_with(tracker, calls=calls)
    page = context.new_page()
    page.route("**/mtc/event", lambda route: route.abort())
    page.route("**/mtracking.gif*", lambda route: route.abort())
    page.goto(site.url("/down.html"))
    page.wait_for_function("window.outcome !== undefined")
    assert page.evaluate("window.outcome") == "error"
    assert tracker.db.hits.count_documents({}) == 0


def test_image_fallback_calls_onload_too(tracker, site, context):
    calls = (
        "mt('send', 'pageview', {page_title: 'via image'}, {onload: function(r) { window.outcome = r; }});"
    )
    site.pages["/img.html"] = page_with(tracker, calls=calls)
    page = context.new_page()
    page.route("**/mtc/event", lambda route: route.abort())
    page.goto(site.url("/img.html"))
    page.wait_for_function("window.outcome !== undefined")
    # Mautic's detail after the image: {event, params, image: true}.
    assert page.evaluate(
        "[window.outcome.image, window.outcome.params.page_title, window.outcome.event[1]]"
    ) == [
        True,
        "via image",
        "pageview",
    ]
    hit = tracker.db.hits.find_one()
    assert hit["endpoint"] == "pixel" and hit["title"] == "via image"
    assert len(hit["fingerprint"]["hash"]) == 28


def test_pageviews_keep_their_order(tracker, site, context):
    calls = "".join(f"mt('send', 'pageview', {{page_title: 'view {i}'}});" for i in range(5))
    calls += "mt('send', 'pageview', {page_title: 'last'}, {onload: function() { window.done = true; }});"
    site.pages["/many.html"] = page_with(tracker, calls=calls)
    page = context.new_page()
    page.goto(site.url("/many.html"))
    page.wait_for_function("window.done === true")
    page.evaluate(
        "mt('send', 'pageview', {page_title: 'after load'}, {onload: function() { window.after = true; }})"
    )
    page.wait_for_function("window.after === true")
    hits = list(tracker.db.hits.find().sort("occurred_at", 1))
    assert [h["title"] for h in hits] == [*(f"view {i}" for i in range(5)), "last", "after load"]
    assert [h["counter"] for h in hits] == list(range(7))
    assert len({h["contact_id"] for h in hits}) == 1


def test_html_img_pixel_snippet(tracker, site, context):
    tracker.make_public("email")
    img = (
        f'<img src="{tracker.url}/mtracking.gif?page_url=http%3a%2f%2fyourdomain.com%2fyour-product-page'
        '&page_title=Some%20Cool%20Product&email=user%40theirdomain.com&tags=ProductA,-ProductB" '
        'style="display: none;"  alt="mautic is open source marketing automation" />'
    )
    site.pages["/img-snippet.html"] = f"<!doctype html><title>x</title>{img}"
    open_tracked(context, site.url("/img-snippet.html"), endpoint="/mtracking.gif")
    hit = tracker.db.hits.find_one()
    assert (hit["url"], hit["title"]) == ("http://yourdomain.com/your-product-page", "Some Cool Product")
    contact = tracker.db.contacts.find_one()
    assert contact["fields"]["email"] == "user@theirdomain.com" and contact["tags"] == ["ProductA"]


def test_javascript_pixel_snippet(tracker, site, context):
    script = f"""<script>
var mauticUrl = '{tracker.url}';
var src = mauticUrl + '/mtracking.gif?page_url=' + encodeURIComponent(window.location.href) + '&page_title=' + encodeURIComponent(document.title);
var img = document.createElement('img');
img.style.width  = '1px';
img.style.height  = '1px';
img.style.display = 'none';
img.src = src;
var body = document.getElementsByTagName('body')[0];
body.appendChild(img);
</script>"""
    site.pages["/js-pixel.html"] = (
        f"<!doctype html><html><head><title>Über & more</title></head><body>{script}</body></html>"
    )
    open_tracked(context, site.url("/js-pixel.html?campaign=a&utm_source=news"), endpoint="/mtracking.gif")
    hit = tracker.db.hits.find_one()
    assert hit["url"] == site.url("/js-pixel.html?campaign=a&utm_source=news")
    assert hit["title"] == "Über & more"
    assert hit["utm"] == {"utm_source": "news"}


def test_two_page_loads_are_one_contact_two_browsers_two(tracker, site, chromium):
    site.pages["/a.html"] = page_with(tracker)
    first, second = chromium.new_context(), chromium.new_context()
    try:
        open_tracked(first, site.url("/a.html"))
        open_tracked(first, site.url("/a.html"))
        open_tracked(second, site.url("/a.html"))
    finally:
        first.close()
        second.close()
    by_contact = {}
    for hit in tracker.db.hits.find():
        by_contact.setdefault(hit["contact_id"], []).append(hit)
    assert sorted(len(hits) for hits in by_contact.values()) == [1, 2]
    two = next(hits for hits in by_contact.values() if len(hits) == 2)
    # one device, so the first load's time on page is known (derived from the second when read)
    assert two[0]["device_id"] == two[1]["device_id"]
    assert two[1]["occurred_at"] - two[0]["occurred_at"] < dt.timedelta(minutes=30)


def test_same_contact_when_third_party_cookies_do_not_flow(tracker, site, context):
    """Served as 127.0.0.1 the site is another site than the tracker (localhost): the tracker's
    SameSite=Lax cookies are not sent, and the device id in localStorage keeps the visitor."""
    site.pages["/a.html"] = page_with(tracker)
    open_tracked(context, site.url("/a.html", host="127.0.0.1"))
    open_tracked(context, site.url("/a.html", host="127.0.0.1"))
    assert tracker.db.contacts.count_documents({}) == 1
    assert len({h["contact_id"] for h in tracker.db.hits.find()}) == 1
    cookies = {c["name"]: c["value"] for c in context.cookies(site.url("/", host="127.0.0.1"))}
    assert cookies["mtc_id"] == tracker.db.contacts.find_one()["_id"]


def test_no_first_party_cookie_when_the_origin_is_not_allowed(tracker, foreign, context):
    foreign.pages["/a.html"] = page_with(tracker)
    open_tracked(context, foreign.url("/a.html", host="127.0.0.1"), endpoint="/mtracking.gif")
    page_cookies = {c["name"] for c in context.cookies(foreign.url("/", host="127.0.0.1"))}
    assert "mtc_id" not in page_cookies
    hits = list(tracker.db.hits.find())
    assert len(hits) == 1 and hits[0]["endpoint"] == "pixel"  # the refused POST recorded nothing
    assert hits[0]["url"] == foreign.url("/a.html", host="127.0.0.1")


DASHBOARD = """<!doctype html><title>Dashboard</title><ul id="visits"></ul><script>
const socket = new WebSocket("{ws}", "graphql-transport-ws");
socket.onopen = () => socket.send(JSON.stringify({{type: "connection_init", payload: {{authorization: "Bearer {key}"}}}}));
socket.onmessage = (message) => {{
  const data = JSON.parse(message.data);
  if (data.type === "connection_ack") {{
    socket.send(JSON.stringify({{id: "visits", type: "subscribe", payload: {{
      query: "subscription {{ liveVisits {{ cursor type contact {{ id }} hit {{ url title }} }} }}"}}}}));
    window.subscribed = true;
  }} else if (data.type === "next") {{
    const item = document.createElement("li");
    item.textContent = data.payload.data.liveVisits.hit.url;
    document.getElementById("visits").appendChild(item);
  }}
}};
</script>"""


def test_a_dashboard_in_the_browser_shows_visits_live(tracker, site, chromium):
    """The README's live-feed example: a visit on the site appears on the dashboard."""
    ws = tracker.url.replace("http://", "ws://") + "/graphql"
    site.pages["/dashboard.html"] = DASHBOARD.format(ws=ws, key=tracker.read_key)
    site.pages["/shop.html"] = page_with(tracker, title="Shop")
    dashboard_context, visitor_context = chromium.new_context(), chromium.new_context()
    try:
        dashboard = dashboard_context.new_page()
        dashboard.goto(site.url("/dashboard.html"))
        dashboard.wait_for_function("window.subscribed === true")
        # Subscriptions start right after "subscribe": visit until the dashboard shows one.
        for _ in range(20):
            open_tracked(visitor_context, site.url("/shop.html"))
            try:
                dashboard.wait_for_selector("#visits li", timeout=1000)
                break
            except Exception:
                continue
        assert dashboard.inner_text("#visits li") == site.url("/shop.html")
    finally:
        dashboard_context.close()
        visitor_context.close()


MAUTIC_JS_PAGE = """
    window.seen = {first: [], delivered: [], queued: [], before: 0, onload: []};
    document.addEventListener('mauticPageEventDelivered', function (e) {
        window.seen.delivered.push(e.detail.response ? e.detail.response.id : 'image');
    });
    document.addEventListener('eventAddedToMauticQueue', function (e) {
        window.seen.queued.push(e.detail[1]);
    });
    // A page's own script, run once mtc.js is there (as Mautic pages do in their plugins).
    var tracker = document.querySelector('script[src$="/mtc.js"]');
    tracker.addEventListener('load', function () {
        MauticJS.onFirstEventDelivery(function (detail) { window.seen.first.push(detail.response.id); });
        MauticJS.beforeFirstEventDelivery(function (params) { window.seen.before += 1; params.page_title = 'Changed first'; });
        mt('send', 'pageview', {}, {onload: function (detail) {
            window.seen.onload.push([detail.id, detail.response.id, detail.params.page_title, detail.event[0]]);
        }});
        mt('send', 'pageview', {page_title: 'Second'});
    });
"""


def test_mautic_js_api_fires_its_events_once_each_as_mautic_does(tracker, site, context):
    """A page written for Mautic's mtc.js: onFirstEventDelivery runs once, after the first
    delivery, with Mautic's detail; beforeFirstEventDelivery may change the first one;
    mauticPageEventDelivered fires for each delivery and eventAddedToMauticQueue for each mt()
    call after load; onload gets Mautic's detail, which also carries the server's JSON."""
    site.pages["/mauticjs.html"] = page_with(tracker, calls=MAUTIC_JS_PAGE)
    page = context.new_page()
    page.goto(site.url("/mauticjs.html"))
    page.wait_for_function("window.seen && window.seen.delivered.length === 2")
    seen = page.evaluate("window.seen")
    contact_id = seen["delivered"][0]
    assert seen["first"] == [contact_id] and seen["before"] == 1
    assert seen["delivered"] == [contact_id, contact_id]
    assert seen["queued"] == ["pageview", "pageview"]
    assert seen["onload"] == [[contact_id, contact_id, "Changed first", "send"]]
    assert sorted(h["title"] for h in tracker.db.hits.find()) == ["Changed first", "Second"]
    # Registered after the first delivery: runs at once.
    assert (
        page.evaluate(
            "new Promise(function (done) { MauticJS.onFirstEventDelivery(function () { done('ran'); }); })"
        )
        == "ran"
    )
    assert page.evaluate("MauticJS.getInput('send', 'pageview').length") == 2


def test_mautic_js_get_tracked_contact_and_cors_request(tracker, site, context):
    """MauticJS.getTrackedContact asks /mtc who this browser is and keeps it as a delivery does;
    makeCORSRequest posts form-encoded with credentials, as Mautic's."""
    site.pages["/who.html"] = page_with(tracker)
    page = context.new_page()
    page.goto(site.url("/who.html"))
    page.wait_for_function("window.MauticJS && MauticJS.firstDeliveryMade")
    contact_id = tracker.db.contacts.find_one()["_id"]
    page.evaluate("localStorage.clear(); document.cookie = 'mtc_id=; max-age=0; path=/'")
    page.evaluate("MauticJS.getTrackedContact()")
    page.wait_for_function("MauticJS.mtcSet === true")
    assert page.evaluate("localStorage.getItem('mtc_id')") == contact_id
    assert f"mtc_id={contact_id}" in page.evaluate("document.cookie")
    answer = page.evaluate(
        """new Promise(function (done) {
            MauticJS.makeCORSRequest('POST', MauticJS.pageTrackingCORSUrl, {page_url: location.href + '#x'},
                function (response) { done(response); }, function (response, xhr) { done('error ' + xhr.status); });
        })"""
    )
    assert answer["success"] == 1 and answer["id"] == contact_id
