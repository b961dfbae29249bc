"""The websocket endpoints: `/ws` (views, popups, wallboards, agents' actions) and the
handlers of its frames."""
