"""The sample corpus: the knowledge base of Larkspur Labs, a fictional company, written as real files.

Larkspur Labs makes the Cobalt environmental sensor and ships it from a warehouse in Lisbon.
The corpus is original text written for tuneloop, consistent with the seed pairs of
``tuneloop.sample``. It has a Markdown handbook, an HTML FAQ, a DOCX policy, a PDF manual, a
PPTX deck, an e-mail and a CSV table (about 20 pages in all). Output is deterministic: the
same bytes on every run (fixed timestamps inside the Office zips and the PDF), so document
ids are stable and re-building is a no-op.

Run ``python -m tuneloop.sample_corpus OUT_DIR`` to write the files only.
"""

from __future__ import annotations

import sys
import zipfile
from datetime import datetime
from pathlib import Path

from store.db import Project

COMPANY = "Larkspur Labs"
FIXED_TIME = datetime(2025, 1, 6, 9, 0, 0)

HANDBOOK = """# Larkspur Labs Employee Handbook

Welcome to Larkspur Labs. We design and build the Cobalt environmental sensor, which measures
temperature, humidity, CO2 and fine dust in offices, schools and warehouses. This handbook explains
how we work together. It applies to every employee in Porto, Lisbon and remote locations.

## Our values

We build instruments people can trust, so we value accuracy over speed. We write things down, we
review each other's work kindly, and we tell customers the truth about what our products can and
cannot do.

## Working hours

Core hours are 10:00 to 16:00 Lisbon time. Outside core hours you may organise your day as you
like, as long as your team knows when to reach you. Record overtime in the HR portal within the
same month; it is compensated as time off.

## Remote work

Employees may work remotely up to three days a week. Tuesdays and Thursdays are office days for
everyone, because that is when teams plan, review and pair. If you live more than 150 km from an
office, agree a different arrangement with your manager and HR.

Remote work must happen from a country where Larkspur Labs can legally employ you. Tell HR before
you work from abroad for more than two weeks.

## Vacation

New employees get 22 vacation days per calendar year, pro-rated in the first year. You may carry
up to five unused days into the next year; they expire on 31 March. Request vacation in the HR
portal at least two weeks ahead for absences longer than three days.

Public holidays follow the calendar of the office you are attached to.

## Sick leave

If you are ill, tell your manager before 10:00 on the first day. From the fourth day of absence we
need a medical certificate. Sick days never count against your vacation.

## Parental leave

Larkspur Labs tops up statutory parental leave to full salary for the first 20 weeks. Parents
can return part time for up to six months after their leave.

## Expenses

Submit expense reports in the finance portal within 30 days, with a photo of every receipt.
Expense reports over 500 euros need approval from the department head and Finance. Reports under
500 euros are approved by your manager alone. Reimbursements are paid with the next salary.

## Equipment

Every employee receives a laptop, a monitor and a headset. Request other equipment from IT with a
short reason. Equipment stays the property of Larkspur Labs; return it on your last day.

## Security

Lock your screen whenever you leave your desk. Use the password manager for every company
account and turn on two-factor authentication. Report a lost laptop or phone to IT within one hour,
at any time of day, by calling the security line.

Never copy customer data to personal devices. Sensor readings of customers are personal data under
the GDPR when they can be linked to a person or a home.

## Who to ask

HR questions go to people@larkspur.example. IT support is at it@larkspur.example. Questions about
this handbook go to your manager first.
"""

FAQ = [
    ("How do I set up my Cobalt sensor?",
     "Charge the sensor for two hours, install the Larkspur app, and hold the power button for three "
     "seconds. The app finds the sensor over Bluetooth and walks you through connecting it to Wi-Fi."),
    ("What does the Cobalt sensor's amber light mean?",
     "An amber light means the battery is below 15 %. Charge the sensor with the supplied USB-C cable; "
     "a full charge takes about two hours."),
    ("Why is my sensor blinking red after an update?",
     "A red blinking light after a firmware update means the update did not finish. Keep the sensor on "
     "its charger and connected to Wi-Fi; it retries within ten minutes. If it still blinks red after "
     "an hour, contact support."),
    ("How often should the Cobalt sensor be calibrated?",
     "Calibrate it every six months, or after a firmware update. Calibration takes five minutes in "
     "fresh outdoor air and is started from the app."),
    ("Can I use the Cobalt sensor outdoors?",
     "No. The Cobalt sensor is rated for indoor use between 0 and 40 degrees Celsius. Rain and direct "
     "sunlight damage the air inlet."),
    ("What is the return window for hardware?",
     "Hardware can be returned within 30 days of delivery. Start a return in your account; we send a "
     "prepaid label and ship replacements from our Lisbon warehouse."),
    ("How do I add a second user to my account?",
     "Open Settings, then Members, and invite the person by e-mail. Invited users can view readings; "
     "only owners can change alerts or remove sensors."),
]

GLOSSARY = [
    ("Cobalt", "Our environmental sensor for temperature, humidity, CO2 and fine dust."),
    ("Cobalt Hub", "An optional gateway that connects up to 40 sensors to the cloud over Ethernet."),
    ("Air score", "A number from 0 to 100 that summarises indoor air quality; higher is better."),
]

POLICY = [
    ("Travel and Expense Policy", None),
    ("Purpose", "This policy explains how employees of Larkspur Labs book business travel and claim "
                "expenses. It aims to keep travel safe, simple and fair, and costs predictable."),
    ("Booking travel", "Book flights, trains and hotels through the Larkspur travel portal. Choose the "
                       "cheapest reasonable option; economy class for flights under six hours. Trains "
                       "are preferred for trips between Porto and Lisbon."),
    ("Approvals", "Trips inside Portugal are approved by your manager. International trips need "
                  "approval from the department head before booking. Expense reports over 500 euros "
                  "need approval from the department head and Finance."),
    ("Daily allowance", "Meals on business trips are covered by a daily allowance of 50 euros in "
                        "Portugal and 70 euros abroad. Alcohol is not reimbursed."),
    ("Claiming expenses", "Submit expense reports within 30 days of the trip in the finance portal, "
                          "with a photo of every receipt. Lost receipts need a signed note explaining "
                          "the amount and purpose."),
    ("Company cards", "Employees who travel more than four times a year may request a company card. "
                      "Card statements must be reconciled by the fifth working day of each month."),
    ("Exceptions", "Exceptions to this policy need written approval from Finance before the expense "
                   "is made."),
]

MANUAL = [
    ("Cobalt User Manual", ["Version 2.1, January 2025. This manual describes the Cobalt environmental "
                            "sensor made by Larkspur Labs and explains how to install, use and maintain it."]),
    ("Overview", ["Cobalt measures temperature, relative humidity, CO2 concentration and fine dust "
                  "(PM2.5) once a minute. Readings are shown in the Larkspur app and can be exported as CSV.",
                  "The sensor runs for about four weeks on one charge and works without a hub in rooms "
                  "with Wi-Fi coverage."]),
    ("What is in the box", ["One Cobalt sensor, a wall bracket with two screws, a USB-C cable, and a "
                            "quick start card. A power adapter is not included."]),
    ("Installing the sensor", ["Mount the sensor at breathing height, between 1.2 and 1.8 metres, away "
                               "from windows, doors, radiators and direct sunlight. Keep at least 30 cm "
                               "of free space around the air inlet.",
                               "Hold the power button for three seconds to switch the sensor on, then "
                               "follow the steps in the app to connect it to Wi-Fi."]),
    ("Status lights", ["A green light means the sensor works normally. An amber light means the battery "
                       "is below 15 %. A blue blinking light means the sensor is pairing. A red blinking "
                       "light after an update means the firmware update did not finish."]),
    ("Calibration", ["Calibrate the sensor every six months, or after a firmware update. Take the sensor "
                     "outdoors into fresh air, start calibration in the app, and wait five minutes "
                     "without moving it."]),
    ("Firmware updates", ["Updates install automatically at night while the sensor is charging. Do not "
                          "unplug the sensor while the light blinks blue during an update."]),
    ("Troubleshooting", ["If the sensor does not appear in the app, move it closer to the router and "
                         "restart it by holding the power button for ten seconds.",
                         "If readings look too high, check that the air inlet is not covered and that "
                         "the sensor is not next to a heat source, then calibrate it again."]),
    ("Cleaning", ["Clean the air inlet with a dry cloth once a month. Never use water or sprays."]),
    ("Technical specifications", ["Temperature range 0 to 40 degrees Celsius, accuracy 0.3 degrees. "
                                  "CO2 range 400 to 5000 ppm. Battery 2600 mAh. Weight 120 g. "
                                  "Wi-Fi 2.4 GHz and Bluetooth 5.0."]),
    ("Warranty and returns", ["Cobalt has a two-year warranty. Hardware can be returned within 30 days "
                              "of delivery. Returns and replacements are handled by our Lisbon warehouse."]),
]

DECK = [
    ("Cobalt 2025 Roadmap", "Larkspur Labs product team, January 2025"),
    ("Where we are", "Cobalt is installed in 1,200 buildings. Customers ask for longer battery life and "
                     "noise measurement."),
    ("Cobalt 2", "Cobalt 2 ships in September with a noise sensor and six weeks of battery life."),
    ("Cobalt Hub", "The Hub gets Power over Ethernet in June, so it needs no separate power adapter."),
    ("Lisbon warehouse", "A second packing line in the Lisbon warehouse cuts shipping time to one working "
                         "day within Portugal and Spain."),
    ("Questions", "Send roadmap questions to product@larkspur.example."),
]

EMAIL = """From: Marta Sousa <marta.sousa@larkspur.example>
To: All staff <staff@larkspur.example>
Subject: Incident report: power cut at the Lisbon warehouse
Date: Tue, 04 Mar 2025 09:30:00 +0000
Message-ID: <incident-2025-03-03@larkspur.example>
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"

Hello everyone,

On 3 March the Lisbon warehouse lost power for 40 minutes because of a fault in the street supply.
Packing stopped during the outage and the afternoon pickup was missed, so orders were delayed by one
day. No stock was damaged and no customer data was affected.

We have asked the landlord to install a backup supply for the packing line and the network rack.
Until then, the warehouse team will call the carrier to rebook the pickup whenever an outage lasts
longer than 15 minutes.

Customer support has sent an apology and a tracking update to every affected customer.

Best regards,
Marta Sousa
Operations Lead, Larkspur Labs
"""

CSV_ROWS = [
    ("question", "answer"),
    ("How long does shipping take?", "Orders ship from Lisbon within two working days; delivery in Europe takes 2 to 5 days."),
    ("Do you ship outside Europe?", "Not yet. We ship to the EU, the United Kingdom, Norway and Switzerland."),
    ("Is there a subscription?", "The app is free. Cobalt Cloud costs 4 euros per sensor per month and keeps two years of history."),
    ("I was charged twice, what do I do?", "Send the invoice numbers to billing@larkspur.example; duplicate charges are refunded within five working days."),
    ("Can I export my readings?", "Yes. In the app open a sensor, choose Export and pick CSV or Excel."),
]


def _fixed_zip(path: Path) -> None:
    """Rewrite a zip with fixed member timestamps so the bytes (and the document id) are stable."""
    with zipfile.ZipFile(path) as zf:
        members = [(i, zf.read(i.filename)) for i in zf.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            zi = zipfile.ZipInfo(info.filename, date_time=(2025, 1, 6, 9, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = info.external_attr
            zf.writestr(zi, data)


def _html(note: str = "") -> str:
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'><title>Cobalt Support FAQ</title>",
             "</head><body>", "<h1>Cobalt Support FAQ</h1>",
             "<p>Answers to the questions customers ask us most about the Cobalt sensor.</p>"]
    for q, a in FAQ:
        parts += [f"<h2>{q}</h2>", f"<p>{a}</p>"]
    parts += ["<h2>Glossary</h2>", "<dl>"]
    for term, definition in GLOSSARY:
        parts += [f"<dt>{term}</dt>", f"<dd>{definition}</dd>"]
    parts += ["</dl>", "<h2>Quick answers</h2>", "<table>",
              "<tr><th>Question</th><th>Answer</th></tr>",
              "<tr><td>Does Cobalt need a hub?</td><td>No, a hub is only needed for more than 40 sensors "
              "or rooms without Wi-Fi.</td></tr>",
              "<tr><td>Which phones does the app support?</td><td>iOS 16 and Android 12 or newer.</td></tr>",
              "</table>"] + ([f"<p>{note}</p>"] if note else []) + ["</body></html>"]
    return "\n".join(parts) + "\n"


def _docx(path: Path, note: str = "") -> None:
    import docx

    d = docx.Document()
    d.core_properties.created = FIXED_TIME
    d.core_properties.modified = FIXED_TIME
    d.core_properties.author = COMPANY
    d.core_properties.title = POLICY[0][0]
    for i, (heading, text) in enumerate(POLICY):
        d.add_heading(heading, 0 if i == 0 else 1)
        if text:
            d.add_paragraph(text)
    d.add_heading("Allowance limits", 1)
    table = d.add_table(rows=1, cols=3)
    for cell, text in zip(table.rows[0].cells, ("Expense", "Portugal", "Abroad")):
        cell.text = text
    for row in (("Daily meals", "50 euros", "70 euros"), ("Hotel per night", "110 euros", "160 euros"),
                ("Taxi per trip", "30 euros", "45 euros")):
        for cell, text in zip(table.add_row().cells, row):
            cell.text = text
    if note:
        d.add_paragraph(note)
    d.save(str(path))
    _fixed_zip(path)


def _pptx(path: Path, note: str = "") -> None:
    from pptx import Presentation

    prs = Presentation()
    prs.core_properties.created = FIXED_TIME
    prs.core_properties.modified = FIXED_TIME
    prs.core_properties.author = COMPANY
    for i, (title, body) in enumerate(DECK):
        slide = prs.slides.add_slide(prs.slide_layouts[0 if i == 0 else 1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body + (f" {note}" if note and i == len(DECK) - 1 else "")
    prs.save(str(path))
    _fixed_zip(path)


def _pdf(path: Path, note: str = "") -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer

    styles = getSampleStyleSheet()
    doc = SimpleDocTemplate(str(path), pagesize=A4, title="Cobalt User Manual", author=COMPANY,
                            invariant=1)
    story = []
    for i, (heading, paras) in enumerate(MANUAL):
        if i:
            story.append(PageBreak())
        # the gap keeps pdfminer from merging the heading into the first paragraph's text box
        story += [Paragraph(heading, styles["Title" if i == 0 else "Heading1"]), Spacer(1, 18)]
        for text in paras:
            story += [Paragraph(text, styles["BodyText"]), Spacer(1, 8)]
    if note:
        story.append(Paragraph(note, styles["BodyText"]))
    doc.build(story)


def _csv(path: Path, note: str = "") -> None:
    import csv

    rows = CSV_ROWS + ([("What revision is this?", note)] if note else [])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


def _text(content: str, note: str, path: Path) -> None:
    path.write_text(content + (f"\n{note}\n" if note else ""), encoding="utf-8")


FILES = {
    "handbook/employee-handbook.md": lambda p, note="": _text(HANDBOOK, note, p),
    "support/cobalt-faq.html": lambda p, note="": p.write_text(_html(note), encoding="utf-8"),
    "policies/travel-and-expense-policy.docx": _docx,
    "manuals/cobalt-user-manual.pdf": _pdf,
    "decks/cobalt-2025-roadmap.pptx": _pptx,
    "mail/lisbon-warehouse-incident.eml": lambda p, note="": _text(EMAIL, note, p),
    "support/shipping-and-billing-answers.csv": _csv,
}


def write_corpus(out_dir: Path, variant: int | None = None) -> list[Path]:
    """Write every corpus file under ``out_dir`` (overwriting); return their paths.

    ``variant`` adds a one-line revision note to every file, so scaled-up copies (the
    benchmark) are distinct documents with the same structure.
    """
    out_dir = Path(out_dir)
    note = f"Revision note {variant}: reviewed by the documentation team." if variant is not None else ""
    paths = []
    for rel, writer in FILES.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(path, note)
        paths.append(path)
    return paths


def add_corpus(project: Project, workers: int = 1):
    """Write the corpus under ``project.root / "corpus"`` and ingest it with ``qa`` and ``sections``."""
    from ingest.documents import IngestConfig, ingest

    corpus = project.root / "corpus"
    write_corpus(corpus)
    return ingest(project, [corpus], IngestConfig(generators=("qa", "sections"), workers=workers,
                                                  author="sample"))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tuneloop.sample_corpus OUT_DIR", file=sys.stderr)
        return 2
    for p in write_corpus(Path(argv[0])):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
