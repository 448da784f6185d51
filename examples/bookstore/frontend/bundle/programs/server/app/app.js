// the app's server code: never served by ddpctl
