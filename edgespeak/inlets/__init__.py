"""Where announcements come in: MQTT (connection, routes, commands), Rhasspy Hermes, Home
Assistant (discovery, state). Each inlet turns its messages into one
:class:`~edgespeak.base.announcement.Announcement` for the scheduler and reports events back."""
