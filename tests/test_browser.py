"""The web page in a real browser: Debian's Chromium, driven by Playwright, against a real gunicorn.

Draws digits with the mouse, uploads real MNIST and Fashion-MNIST test images, switches models, sends a
bad file, uses only the keyboard, and renders a phone-sized viewport. No console error or warning and no
uncaught exception may happen on the way. Screenshots land in ``artifacts/browser/`` for a human to look
at (the folder is git-ignored).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from bench.numbercorpus import generate, mnist_test_digits

from .support import FASHION_DIR, ROOT, GunicornServer, idx_test_split, require_program

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SIDE = 280  # the canvas backing store
WIDE = (840, 280)  # the number pad's backing store
FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
TIMEOUT_MS = 20_000


# ---- Fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """Session-scoped like ``server`` and listed before it: without Chromium, skip before gunicorn starts."""
    executable = require_program("chromium", "browser tests")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)  # two shared cores: give answers time
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class UI:
    """One browser tab on the page, with every console error/warning and page error it produced."""

    page: object
    server: GunicornServer
    problems: list[str] = field(default_factory=list)

    def open(self) -> UI:
        from playwright.sync_api import expect

        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda exc: self.problems.append(f"pageerror: {exc}"))
        self.page.set_default_timeout(TIMEOUT_MS)
        response = self.page.goto(self.server.url + "/")
        assert response is not None and response.ok
        expect(self.page.locator("#model")).to_be_enabled()
        return self

    def _on_console(self, message) -> None:
        if message.type in ("error", "warning", "assert"):
            self.problems.append(f"console.{message.type}: {message.text}")

    def assert_clean(self, allowed: re.Pattern[str] | None = None) -> None:
        problems = [p for p in self.problems if not (allowed and allowed.search(p))]
        assert problems == [], "the page logged errors or warnings:\n" + "\n".join(problems)

    # -- drawing on the canvas, in canvas pixels (0..280), whatever size CSS gives it --

    def stroke(self, points: list[tuple[float, float]], pad: str = "#pad",
               size: tuple[int, int] = (SIDE, SIDE)) -> None:
        box = self.page.locator(pad).bounding_box()
        sx, sy = box["width"] / size[0], box["height"] / size[1]
        mouse = self.page.mouse
        mouse.move(box["x"] + points[0][0] * sx, box["y"] + points[0][1] * sy)
        mouse.down()
        for x, y in points[1:]:
            mouse.move(box["x"] + x * sx, box["y"] + y * sy, steps=3)
        mouse.up()

    def draw_one(self) -> None:
        self.stroke([(146 - 0.08 * (y - 45), y) for y in range(45, 240, 15)])

    def draw_zero(self) -> None:
        self.stroke([(140 + 62 * math.sin(t), 140 - 92 * math.cos(t))
                     for t in np.linspace(0, 2 * math.pi * 1.03, 40)])

    def bar_labels(self) -> list[str]:
        return self.page.locator("#bars .bar-label").all_inner_texts()


@pytest.fixture
def ui(chromium, server: GunicornServer) -> Iterator[UI]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield UI(context.new_page(), server).open()
    finally:
        context.close()


def screenshot(page, name: str, **kwargs) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), **kwargs)
    return path


# ---- Test data: real test-set images the served models get right ----------------------------------


def correctly_classified(server: GunicornServer, model: str, images: np.ndarray, labels: np.ndarray,
                         names: list[str], tmp_path: Path, count: int, prefer=None) -> list[tuple[Path, str]]:
    """PNG files of test images the model classifies correctly, with their class names.

    Asks the API first (one multipart batch), so the browser test checks the page, not the model.
    """
    files = []
    for index in range(len(images)):
        path = tmp_path / f"{model}-{index}.png"
        Image.fromarray(images[index]).save(path)
        files.append(path)
    body = [("file", (p.name, p.read_bytes(), "image/png")) for p in files]
    answer = requests.post(f"{server.url}/v1/models/{model}/predict?top_k=1", files=body, timeout=30)
    answer.raise_for_status()
    right = [(files[i], names[labels[i]]) for i, pred in enumerate(answer.json()["predictions"])
             if pred["index"] == labels[i]]
    if prefer:
        right.sort(key=lambda item: item[1] not in prefer)
    chosen, seen = [], set()
    for path, name in right:  # distinct classes, so a mix-up between files would show
        if name not in seen:
            chosen.append((path, name))
            seen.add(name)
    assert len(chosen) >= count, f"{model} gets too few of the first {len(images)} test images right"
    return chosen[:count]


# ---- Tests ---------------------------------------------------------------------------------------


def test_page_headers_and_assets(server: GunicornServer) -> None:
    """GET / is the page with a strict CSP; its assets and icon are served from the package."""
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert '<meta name="viewport"' in page.text and "<script>" not in page.text
    for path, kind in [("/static/app.js", "javascript"), ("/static/style.css", "text/css"),
                       ("/static/favicon.svg", "image/svg+xml"), ("/favicon.ico", "image/svg+xml")]:
        asset = requests.get(server.url + path, timeout=10)
        assert asset.status_code == 200, path
        assert kind in asset.headers["Content-Type"], (path, asset.headers["Content-Type"])


def test_draw_a_one_and_a_zero(ui: UI) -> None:
    from playwright.sync_api import expect

    page = ui.page
    assert page.locator("#pad").evaluate("c => [c.width, c.height]") == [SIDE, SIDE]
    expect(page.locator("#model")).to_have_value("mnist")
    assert ui.bar_labels() == [str(d) for d in range(10)]

    ui.draw_one()  # predicted when the stroke ends, after a short debounce: no button press
    expect(page.locator("#prediction")).to_have_text("1")
    expect(page.locator("#answered-by")).to_have_text(re.compile(r"^mnist v\d+$"))
    expect(page.locator("#latency")).to_have_text(re.compile(r"^\d+ ms$"))
    bars = page.get_by_role("progressbar")
    expect(bars).to_have_count(10)
    best = page.locator("#bars .bar.best")
    expect(best.locator(".bar-label")).to_have_text("1")
    expect(best.locator(".bar-value")).to_have_text(re.compile(r"^[<>]?\d+(\.\d)?%$"))
    assert float(best.get_by_role("progressbar").get_attribute("aria-valuenow")) > 50
    screenshot(page, "drawn-one.png")

    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#prediction")).to_have_text("–")
    page.get_by_role("button", name="Predict").click()  # nothing drawn: says so, sends nothing
    expect(page.locator("#confidence")).to_contain_text("draw something first")

    ui.draw_zero()
    expect(page.locator("#prediction")).to_have_text("0")
    page.get_by_role("button", name="Predict").click()  # the button gives the same answer
    expect(page.locator("#prediction")).to_have_text("0")
    screenshot(page, "drawn-zero.png")
    ui.assert_clean()


def test_upload_mnist_digits(ui: UI, server: GunicornServer, mnist_test, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    images, labels = mnist_test
    chosen = correctly_classified(server, "mnist", images[:30], labels[:30], [str(d) for d in range(10)],
                                  tmp_path, count=3)
    page = ui.page
    page.locator("#files").set_input_files([str(path) for path, _ in chosen])

    items = page.locator("#uploads li")
    expect(items).to_have_count(3)
    for index, (path, label) in enumerate(chosen):  # one result per file, in the order sent
        expect(items.nth(index).locator(".upload-name")).to_have_text(path.name)
        expect(items.nth(index).locator(".upload-verdict")).to_have_text(re.compile(rf"^{label} · "))
    expect(page.locator("#prediction")).to_have_text(chosen[0][1])
    expect(page.locator("#source")).to_have_text(chosen[0][0].name)

    items.nth(1).get_by_role("button").click()  # each result can be shown in full
    expect(page.locator("#prediction")).to_have_text(chosen[1][1])
    expect(items.nth(1).get_by_role("button")).to_have_attribute("aria-pressed", "true")
    screenshot(page, "uploaded-mnist.png", full_page=True)
    ui.assert_clean()


def test_fashion_model_names_the_class(ui: UI, server: GunicornServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    images, labels = (array[:40] for array in idx_test_split(FASHION_DIR))
    (path, name), = correctly_classified(server, "fashion-mnist", images, labels, FASHION_LABELS, tmp_path,
                                         count=1, prefer={"Trouser", "Ankle boot", "Sneaker", "Bag"})
    page = ui.page
    page.locator("#model").select_option("fashion-mnist")
    expect(page.locator("#bars .bar-label").first).to_have_text("T-shirt/top")
    assert ui.bar_labels() == FASHION_LABELS

    page.locator("#files").set_input_files(str(path))
    expect(page.locator("#prediction")).to_have_text(name)
    expect(page.locator("#answered-by")).to_have_text(re.compile(r"^fashion-mnist v\d+$"))
    expect(page.locator("#bars .bar.best .bar-label")).to_have_text(name)
    screenshot(page, "fashion-prediction.png", full_page=True)
    ui.assert_clean()


# A refused upload makes Chromium itself log the HTTP status of the failed request; nothing else may appear.
EXPECTED_4XX = re.compile(r"^console\.error: Failed to load resource: .*status of 4\d\d")


def test_bad_file_shows_a_readable_error(ui: UI, mnist_test, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    bad = tmp_path / "notes.png"
    bad.write_text("this is a text file, not a picture\n")
    page = ui.page
    page.locator("#files").set_input_files(str(bad))
    error = page.get_by_role("alert")
    expect(error).to_contain_text("notes.png")
    expect(error).to_contain_text(re.compile(r"HTTP 4\d\d"))
    assert len(error.inner_text()) > 30  # a sentence from the server, not just a status code
    expect(page.locator("#uploads li.failed")).to_have_count(1)
    expect(page.locator("#prediction")).to_have_text("–")
    screenshot(page, "bad-file.png", full_page=True)

    # A good file next to a bad one still gets its answer; the bad one is marked in the list.
    good = tmp_path / "digit.png"
    Image.fromarray(mnist_test[0][0]).save(good)
    page.locator("#files").set_input_files([str(good), str(bad)])
    expect(error).to_contain_text("1 of 2 files could not be classified")
    expect(page.locator("#uploads li.failed .upload-name")).to_have_text("notes.png")
    first = page.locator("#uploads li").first
    expect(first.locator(".upload-verdict")).to_have_text(re.compile(rf"^{mnist_test[1][0]} · [<>]?\d"))
    expect(page.locator("#prediction")).not_to_have_text("–")
    screenshot(page, "good-and-bad-files.png", full_page=True)
    ui.assert_clean(allowed=EXPECTED_4XX)


def test_drag_and_drop(ui: UI, mnist_test, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    digit = tmp_path / "dropped.png"
    Image.fromarray(mnist_test[0][1]).save(digit)
    page = ui.page
    page.locator("#dropzone").evaluate("""(zone, [name, bytes]) => {
        const data = new DataTransfer();
        data.items.add(new File([new Uint8Array(bytes)], name, { type: "image/png" }));
        for (const type of ["dragenter", "dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: data }));
        }
    }""", [digit.name, list(digit.read_bytes())])
    expect(page.locator("#uploads li .upload-name")).to_have_text("dropped.png")
    expect(page.locator("#source")).to_have_text("dropped.png")
    expect(page.locator("#prediction")).not_to_have_text("–")
    ui.assert_clean()


def test_keyboard_only(ui: UI, mnist_test, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = ui.page
    # Playwright turns file-chooser interception on without waiting for it: do it early, not racing
    # the key press that opens the chooser below.
    page.on("filechooser", lambda chooser: None)
    reached = []
    for _ in range(15):  # Tab walks through every control, each showing a visible focus ring
        page.keyboard.press("Tab")
        focused = page.evaluate("""() => {
            const e = document.activeElement, s = getComputedStyle(e);
            return [e.id, s.outlineStyle, s.outlineWidth];
        }""")
        if focused[0] in ("model", "predict", "clear", "files"):
            assert focused[1] != "none" and focused[2] != "0px", f"no visible focus on #{focused[0]}"
        reached.append(focused[0])
    assert {"model", "predict", "clear", "files"} <= set(reached), reached
    assert reached.index("model") < reached.index("predict") < reached.index("clear") < reached.index("files")

    ui.draw_one()
    expect(page.locator("#prediction")).not_to_have_text("–")
    page.locator("#clear").focus()
    page.keyboard.press("Enter")  # clears the pad
    expect(page.locator("#prediction")).to_have_text("–")
    blank = page.locator("#pad").evaluate(
        "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.every(v => v === 255)")
    assert blank

    select = page.locator("#model")
    select.focus()  # arrow keys switch the model; the bars relabel
    before, first_label = select.input_value(), ui.bar_labels()[0]
    there, back = ("ArrowUp", "ArrowDown") if select.evaluate("s => s.selectedIndex") > 0 else (
        "ArrowDown", "ArrowUp")
    page.keyboard.press(there)
    expect(select).not_to_have_value(before)
    expect(page.locator("#bars .bar-label").first).not_to_have_text(first_label)
    page.keyboard.press(back)
    expect(select).to_have_value(before)

    digit = tmp_path / "digit.png"
    Image.fromarray(mnist_test[0][0]).save(digit)
    page.locator("#files").focus()
    with page.expect_file_chooser() as chooser:  # the file input opens from the keyboard
        page.keyboard.press("Space")
    chooser.value.set_files(str(digit))
    expect(page.locator("#uploads li")).to_have_count(1)
    expect(page.locator("#source")).to_have_text("digit.png")
    ui.assert_clean()


def test_phone_viewport(chromium, server: GunicornServer) -> None:
    from playwright.sync_api import expect

    context = chromium.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                   is_mobile=True, has_touch=True)
    try:
        ui = UI(context.new_page(), server).open()
        page = ui.page
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width}px wide)"
        pad = page.locator("#pad")
        box = pad.bounding_box()
        assert 200 <= box["width"] <= 390 and abs(box["width"] - box["height"]) < 1
        assert pad.evaluate("c => [c.width, c.height]") == [SIDE, SIDE]  # CSS scales, the store does not
        ui.draw_one()
        expect(page.locator("#prediction")).to_have_text("1")
        screenshot(page, "phone.png", full_page=True)
        ui.assert_clean()
    finally:
        context.close()


def test_number_mode_reads_a_written_number_and_a_photo(ui: UI, server: GunicornServer, tmp_path: Path) -> None:
    """Number mode: write three digits on the wide pad, then upload a photographed number; the string,
    one box and one probability per digit are shown; a bad file gets a readable error."""
    from playwright.sync_api import expect

    page = ui.page
    page.get_by_role("radio", name="a number").check()
    expect(page.locator("#number-card")).to_be_visible()
    expect(page.locator("#pad")).to_be_hidden()
    assert "mode=number" in page.url
    pad = page.locator("#number-pad")
    assert pad.evaluate("c => [c.width, c.height]") == list(WIDE)

    ui.stroke([(150 - 0.08 * (y - 45), y) for y in range(45, 240, 15)], "#number-pad", WIDE)  # 1
    ui.stroke([(420 + 62 * math.sin(t), 140 - 92 * math.cos(t))  # 0
               for t in np.linspace(0, 2 * math.pi * 1.03, 40)], "#number-pad", WIDE)
    ui.stroke([(690 - 0.08 * (y - 45), y) for y in range(45, 240, 15)], "#number-pad", WIDE)  # 1
    expect(page.locator("#number-text")).to_have_text("101")
    items = page.locator("#number-digits li")
    expect(items).to_have_count(3)
    assert items.locator(".digit-label").all_inner_texts() == ["1", "0", "1"]
    for text in items.locator(".digit-probability").all_inner_texts():
        assert re.fullmatch(r"[<>]?\d+(\.\d)?%", text), text
    lefts = [int(re.search(r"x (\d+)", t).group(1)) for t in items.locator(".digit-box").all_inner_texts()]
    assert lefts == sorted(lefts) and lefts[0] < 280 < lefts[1] < 560 < lefts[2]  # boxes on the digits
    expect(page.locator("#number-view")).to_be_visible()
    expect(page.locator("#number-answered-by")).to_have_text(re.compile(r"^mnist v\d+$"))
    screenshot(page, "number-drawn.png", full_page=True)

    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#number-text")).to_have_text("–")
    expect(items).to_have_count(0)

    # A photographed number the API reads right (the page is under test here, not the reader).
    images, labels = mnist_test_digits()
    for sample in generate(30, style="photo", seed=7, images=images, labels=labels):
        answer = requests.post(server.url + "/read", data=sample.data, headers={"Content-Type": "image/jpeg"},
                               timeout=30).json()
        if answer["text"] == sample.text and len(sample.text) >= 3:
            break
    else:
        raise AssertionError("no photographed number of the first 30 is read right")
    photo = tmp_path / "number-photo.jpg"
    photo.write_bytes(sample.data)
    page.locator("#number-file").set_input_files(str(photo))
    expect(page.locator("#number-text")).to_have_text(sample.text)
    expect(items).to_have_count(len(sample.text))
    expect(page.locator("#number-source")).to_have_text("number-photo.jpg")
    screenshot(page, "number-photo.png", full_page=True)

    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    page.locator("#number-file").set_input_files(str(bad))
    alert = page.locator("#number-error")
    expect(alert).to_contain_text("notes.png")
    expect(alert).to_contain_text(re.compile(r"HTTP 4\d\d"))
    expect(page.locator("#number-text")).to_have_text("–")

    page.get_by_role("radio", name="one digit").check()  # back to one digit: the square pad again
    expect(page.locator("#pad")).to_be_visible()
    expect(page.locator("#number-card")).to_be_hidden()
    ui.assert_clean(allowed=EXPECTED_4XX)


# ---- Feedback: "Wrong? It is:" buttons ---------------------------------------------------------------


@pytest.fixture(scope="module")
def feedback_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GunicornServer, Path]]:
    """A second server, with FEEDBACK_DIR set (the session server has feedback off)."""
    folder = tmp_path_factory.mktemp("feedback-server")
    store = folder / "store"
    with GunicornServer(env={"FEEDBACK_DIR": str(store)}, log_path=folder / "gunicorn.log") as srv:
        yield srv, store


def test_feedback_buttons_are_hidden_when_feedback_is_off(ui: UI) -> None:
    from playwright.sync_api import expect

    ui.draw_one()
    expect(ui.page.locator("#prediction")).to_have_text("1")
    expect(ui.page.locator("#feedback")).to_be_hidden()
    ui.assert_clean()


def test_feedback_buttons_send_the_drawn_and_the_uploaded_picture(chromium, feedback_server, mnist_test,
                                                                  tmp_path: Path) -> None:
    from playwright.sync_api import expect

    server, store = feedback_server
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        ui = UI(context.new_page(), server).open()
        page = ui.page
        expect(page.locator("#feedback")).to_be_hidden()  # nothing predicted yet
        ui.draw_one()
        expect(page.locator("#prediction")).to_have_text("1")
        feedback = page.locator("#feedback")
        expect(feedback).to_be_visible()
        expect(feedback).to_contain_text("Wrong? It is:")
        expect(feedback.get_by_role("button")).to_have_count(10)
        feedback.get_by_role("button", name="It is 7", exact=False).click()
        expect(page.locator("#feedback-status")).to_have_text(re.compile(r"^Thanks: saved as 7"))
        drawn = list((store / "mnist" / "7").glob("*.png"))
        assert len(drawn) == 1
        assert Image.open(drawn[0]).size == (SIDE, SIDE)  # the pad's own PNG, as the page sent it
        feedback.get_by_role("button", name="It is 7", exact=False).click()  # twice: stored once
        expect(page.locator("#feedback-status")).to_have_text(re.compile(r"^Already saved as 7"))
        screenshot(page, "feedback-drawn.png")

        images, _ = mnist_test
        upload = tmp_path / "three.png"
        Image.fromarray(images[18]).save(upload)
        page.locator("#files").set_input_files([str(upload)])
        expect(page.locator("#source")).to_have_text("three.png")
        feedback.get_by_role("button", name="It is 3", exact=False).click()
        expect(page.locator("#feedback-status")).to_have_text(re.compile(r"^Thanks: saved as 3"))
        (stored,) = list((store / "mnist" / "3").iterdir())
        assert stored.read_bytes() == upload.read_bytes()  # the user's file, byte for byte
        lines = (store / "mnist" / "feedback.jsonl").read_text().splitlines()
        assert len(lines) == 2
        ui.assert_clean()
    finally:
        context.close()
